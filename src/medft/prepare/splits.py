"""Train / validation / test assignment: stratified by class, grouped (patient, duplicate).

Groups can join several keys (the same file listed twice, byte-identical copies, a
patient id): `joined_groups` makes one group of every item linked through any of them.

Every split is a pure function of the labels, groups and seed, so the same
files always land in the same split, and two tasks built from one source (the
brain dataset's binary and 44-class tasks) share one assignment.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from medft.errors import MedftError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def canonical_split(name: str) -> str | None:
    """'Training', 'val', 'valid', ... -> 'train' / 'validation' / 'test' (None if not a split)."""
    return SPLIT_ALIASES.get(name.strip().lower())


def check_sizes(sizes: dict[str, float]) -> None:
    for split, size in sizes.items():
        if not 0 <= size < 1:
            raise MedftError(f"--{split[:3]}-size must be in [0, 1), got {size}.")
    if sum(sizes.values()) >= 1:
        raise MedftError(
            f"validation and test sizes add up to {sum(sizes.values()):.2f}; "
            "they must leave some data for training (sum < 1)."
        )


def carve_splits(
    n_items: int,
    sizes: dict[str, float],
    *,
    labels: Sequence[int] | None = None,
    groups: Sequence[Hashable] | None = None,
    seed: int = 42,
) -> list[str]:
    """Name a split for each of ``n_items`` items: ``sizes`` maps split -> fraction, rest is train.

    With ``labels``, every class is split in the same proportions (stratified),
    each class shuffled by its own seeded generator so that one class's files do
    not move when another class changes. With ``groups``, items of one group
    (a patient, a set of byte-identical files) always share a split, and the
    fractions count groups. Counts are rounded per class, so a class too small to
    spare an item for a split keeps it in train.
    """
    check_sizes(sizes)
    group_keys = list(groups) if groups is not None else list(range(n_items))
    unit_of_item, unit_label = [], {}
    unit_index: dict[Hashable, int] = {}
    for item, key in enumerate(group_keys):
        if key not in unit_index:
            unit_index[key] = len(unit_index)
            unit_label[unit_index[key]] = labels[item] if labels is not None else 0
        unit_of_item.append(unit_index[key])

    units_by_class: dict[int, list[int]] = {}
    for unit, label in unit_label.items():
        units_by_class.setdefault(label, []).append(unit)

    split_of_unit: dict[int, str] = {}
    for label, units in sorted(units_by_class.items()):
        order = np.random.default_rng([seed, label]).permutation(len(units))
        start = 0
        for split in ("test", "validation"):
            count = round(len(units) * sizes.get(split, 0.0))
            for position in order[start : start + count]:
                split_of_unit[units[position]] = split
            start += count
        for position in order[start:]:
            split_of_unit[units[position]] = "train"
    return [split_of_unit[unit] for unit in unit_of_item]


def joined_groups(*key_lists: Sequence[Hashable | None]) -> list[int]:
    """One group per item, numbered by the group's first item: items that share a key in any
    of ``key_lists`` (a file, its bytes, a patient), directly or through other items, are one
    group. Each list keys the items on its own; a None key joins nothing."""
    if len({len(keys) for keys in key_lists}) != 1:
        raise ValueError("joined_groups needs one key per item in every list")
    parent = list(range(len(key_lists[0])))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for keys in key_lists:
        first_with: dict[Hashable, int] = {}
        for item, key in enumerate(keys):
            if key is not None:
                one, other = root(item), root(first_with.setdefault(key, item))
                parent[max(one, other)] = min(one, other)  # the first item stays the root
    return [root(item) for item in range(len(parent))]


def groups_in_several_splits(groups_by_split: dict[str, Sequence[Hashable]]) -> set[Hashable]:
    """The groups (e.g. patients) that appear in more than one split."""
    seen: dict[Hashable, str] = {}
    shared = set()
    for split, groups in groups_by_split.items():
        for group in set(groups):
            if seen.setdefault(group, split) != split:
                shared.add(group)
    return shared


def assign_splits(
    given: Sequence[str | None],
    sizes: dict[str, float],
    *,
    labels: Sequence[int] | None = None,
    groups: Sequence[Hashable] | None = None,
    seed: int = 42,
) -> list[str]:
    """Keep each item's given split; carve the splits nobody was given out of the rest.

    Items given no split (None) and items given 'train' form the pool that
    missing validation / test splits are carved from (see `carve_splits`).
    """
    present = {split for split in given if split}
    sizes = {split: size for split, size in sizes.items() if split not in present}
    pool = [i for i, split in enumerate(given) if split in (None, "train")]
    carved = carve_splits(
        len(pool),
        sizes,
        labels=[labels[i] for i in pool] if labels is not None else None,
        groups=[groups[i] for i in pool] if groups is not None else None,
        seed=seed,
    )
    assigned = list(given)
    for i, split in zip(pool, carved):
        assigned[i] = split
    return assigned
