from collections import Counter

import pytest

from medft.errors import MedftError
from medft.prepare.splits import (
    assign_splits,
    canonical_split,
    carve_splits,
    groups_in_several_splits,
    joined_groups,
)

SIZES = {"validation": 0.15, "test": 0.15}


def per_class_counts(labels, splits):
    return Counter(zip(labels, splits))


def test_stratified_every_class_split_in_the_same_proportions():
    labels = [c for c in range(5) for _ in range(40)]
    splits = carve_splits(len(labels), SIZES, labels=labels, seed=1)
    counts = per_class_counts(labels, splits)
    for c in range(5):
        assert counts[(c, "test")] == 6 and counts[(c, "validation")] == 6
        assert counts[(c, "train")] == 28


def test_deterministic_for_a_seed_and_different_for_another():
    labels = [i % 4 for i in range(200)]
    first = carve_splits(200, SIZES, labels=labels, seed=7)
    assert first == carve_splits(200, SIZES, labels=labels, seed=7)
    assert first != carve_splits(200, SIZES, labels=labels, seed=8)


def test_a_class_keeps_its_assignment_when_another_class_changes():
    labels = [0] * 30 + [1] * 30
    before = carve_splits(60, SIZES, labels=labels, seed=3)
    after = carve_splits(90, SIZES, labels=labels + [2] * 30, seed=3)
    assert before == after[:60]


def test_groups_stay_together_and_count_as_units():
    groups = [f"patient{i // 3}" for i in range(300)]  # 100 patients, 3 images each
    splits = carve_splits(300, {"validation": 0.1, "test": 0.2}, groups=groups, seed=0)
    by_split = {s: [g for g, t in zip(groups, splits) if t == s] for s in set(splits)}
    assert groups_in_several_splits(by_split) == set()
    assert len(set(by_split["validation"])) == 10 and len(set(by_split["test"])) == 20


def test_tiny_classes_stay_in_train():
    splits = carve_splits(3, SIZES, labels=[0, 1, 1], seed=0)
    assert splits == ["train", "train", "train"]


def test_sizes_are_checked():
    with pytest.raises(MedftError, match="leave some data for training"):
        carve_splits(10, {"validation": 0.5, "test": 0.5})
    with pytest.raises(MedftError, match=r"\[0, 1\)"):
        carve_splits(10, {"validation": -0.1})


def test_assign_keeps_given_splits_and_carves_the_missing_one_from_train():
    given = ["train"] * 80 + ["test"] * 20
    labels = [i % 2 for i in range(100)]
    assigned = assign_splits(given, SIZES, labels=labels, seed=0)
    assert assigned[80:] == ["test"] * 20
    assert Counter(assigned[:80]) == {"train": 68, "validation": 12}


def test_split_aliases():
    assert canonical_split("Training") == "train"
    assert canonical_split("val") == canonical_split("VALID") == "validation"
    assert canonical_split("Testing") == "test"
    assert canonical_split("images") is None


def test_items_sharing_a_key_in_any_list_are_one_group_numbered_by_its_first_item():
    files = ["a", "b", "c", "d", "e", None]
    patients = [1, None, 1, 2, 2, None]
    assert joined_groups(files) == [0, 1, 2, 3, 4, 5]
    assert joined_groups(files, patients) == [0, 1, 0, 3, 3, 5]
    contents = ["x", "y", None, "y", None, None]  # joins b to d, and so to e
    assert joined_groups(files, patients, contents) == [0, 1, 0, 1, 1, 5]
    assert joined_groups(["k", None], [None, "k"]) == [0, 1]  # each list keys its own items
    with pytest.raises(ValueError, match="one key per item"):
        joined_groups(files, patients[:-1])
