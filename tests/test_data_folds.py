"""Cross-validation folds: stratified, grouped by patient (or identical bytes), test untouched."""

from collections import Counter

import numpy as np
import pytest
from datasets import Value, concatenate_datasets, load_from_disk

from medft.data.folds import assign_folds, fold_splits, groups_of
from medft.data.loading import load_training_data
from medft.errors import MedftError
from medft.tasks import TaskInfo


def test_folds_are_stratified_and_keep_identical_images_together(brain_multiclass):
    dataset, task = load_training_data(str(brain_multiclass))
    pool = concatenate_datasets([dataset["train"], dataset["validation"]])
    fold_of = assign_folds(task, pool, folds=3, seed=0)
    assert sorted(set(fold_of)) == [0, 1, 2]
    labels = np.asarray(pool["label"])
    for label in np.unique(labels):  # each class spread over the folds as evenly as it can be
        counts = Counter(fold_of[labels == label])
        assert max(counts.values()) - min(counts.get(k, 0) for k in range(3)) <= 2
    groups = groups_of(pool, "image")
    for group in set(groups):  # byte-identical copies (the generator makes some) share a fold
        assert len(set(fold_of[groups == group])) == 1
    assert len(set(groups)) < len(pool)  # there were copies to keep together
    assert np.array_equal(fold_of, assign_folds(task, pool, folds=3, seed=0))  # deterministic
    assert not np.array_equal(fold_of, assign_folds(task, pool, folds=3, seed=1))


def test_no_patient_is_in_two_folds_and_the_test_split_is_never_folded(nih_prepared):
    dataset, task = load_training_data(str(nih_prepared))
    test_ids = set(dataset["test"]["image_id"])
    held_out_ids = []
    for fold in range(3):
        train, held_out = fold_splits(task, dataset["train"], dataset["validation"], 3, fold, 0)
        assert not set(train["patient_id"]) & set(held_out["patient_id"])
        assert not (set(train["image_id"]) | set(held_out["image_id"])) & test_ids
        assert len(train) + len(held_out) == len(dataset["train"]) + len(dataset["validation"])
        held_out_ids += list(held_out["image_id"])
    pooled = list(dataset["train"]["image_id"]) + list(dataset["validation"]["image_id"])
    assert sorted(held_out_ids) == sorted(pooled)  # every image held out once


def test_multilabel_strata_pool_rare_finding_combinations():
    task = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")
    labels = [[0]] * 5 + [[1]] * 5 + [[0, 1]] * 2 + [[]] * 5
    keys = task.fold_strata(labels, folds=3)
    assert Counter(keys) == {"0": 5, "1": 5, "": 5, "rare combinations": 2}


def test_more_folds_than_patients_is_a_clear_error(nih_prepared):
    dataset = load_from_disk(str(nih_prepared))
    _, task = load_training_data(str(nih_prepared))
    tiny = dataset["train"].filter(
        lambda row: row["patient_id"] == dataset["train"][0]["patient_id"]
    )
    with pytest.raises(MedftError, match="need at least 3 patients"):
        assign_folds(task, tiny, folds=3, seed=0)


def test_images_without_a_patient_id_are_folded_each_on_its_own(nih_prepared):
    """A dataset whose patient_id column has gaps (a Hub dataset, a CSV, an older medft) folds:
    the known patients stay whole, and each image without an id is a group of its own."""
    dataset, task = load_training_data(str(nih_prepared))
    pool = concatenate_datasets([dataset["train"], dataset["validation"]])
    patients = list(pool["patient_id"])
    gaps = [row for row in range(len(pool)) if row % 3 == 0]
    with_gaps = pool.cast_column("patient_id", Value("string")).map(
        lambda row, index: {"patient_id": None if index in gaps else str(row["patient_id"])},
        with_indices=True,
    )
    fold_of = assign_folds(task, with_gaps, folds=3, seed=0)
    groups = groups_of(with_gaps, "image")
    assert len(set(groups[gaps])) == len(gaps)  # never pooled into one "None" patient
    for patient in set(patients):
        rows = [r for r, p in enumerate(patients) if p == patient and r not in gaps]
        assert len(set(fold_of[rows])) <= 1


def test_near_copies_share_a_fold_as_they_share_a_split(brain_multiclass):
    dataset, task = load_training_data(str(brain_multiclass))
    pool = concatenate_datasets([dataset["train"], dataset["validation"]])
    assert "perceptual_hash" in pool.column_names  # medft prepare stores each image's hash
    hashes = list(pool["perceptual_hash"])
    # make row 1 a near copy (one bit apart) of row 0, whatever their bytes and classes
    hashes[1] = f"{int(hashes[0], 16) ^ 1:016x}"
    pool = pool.remove_columns("perceptual_hash").add_column("perceptual_hash", hashes)
    near = groups_of(pool, "image", near_copies=4)
    assert near[0] == near[1]
    assert groups_of(pool, "image")[0] != groups_of(pool, "image")[1]  # bytes alone differ
    fold_of = assign_folds(task, pool, folds=3, seed=0, near_copies=4)
    for group in set(near):
        assert len(set(fold_of[near == group])) == 1
