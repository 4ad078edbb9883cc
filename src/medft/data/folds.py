"""Cross-validation folds over the train and validation splits, the test split left alone.

Folds are stratified by class (multi-label: by the combination of findings, with
combinations too rare to spread over the folds pooled into one stratum) and grouped
so that related images never straddle two folds: by `patient_id` where the data has
it (an image without one alone), else by the image's bytes (byte-identical copies, which
real datasets hold, stay together), and, where `medft prepare` stored perceptual hashes,
joined with the near-copy groups it kept in one split. scikit-learn's
`StratifiedGroupKFold` does the assignment, seeded.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset, concatenate_datasets
from sklearn.model_selection import StratifiedGroupKFold

from medft.data.patients import image_digests, patient_groups
from medft.errors import MedftError
from medft.near_duplicates import HASH_COLUMN, hash_values, near_groups
from medft.prepare.splits import joined_groups
from medft.tasks import TaskInfo


def groups_of(dataset: Dataset, image_column: str, near_copies: int | None = None) -> np.ndarray:
    """Each image's group: its patient where known (`medft.data.patients`), else a digest of
    its stored bytes; joined with the groups of near copies (hashes within ``near_copies``
    bits) where the dataset stores perceptual hashes."""
    groups = patient_groups(dataset, image_column)
    if groups is None:
        groups = np.array(image_digests(dataset, image_column), dtype=object)
    if near_copies is None or HASH_COLUMN not in dataset.column_names:
        return groups
    values = hash_values(list(dataset.with_format(None)[HASH_COLUMN]))
    joined = joined_groups(groups.tolist(), near_groups(values, near_copies).tolist())
    return np.asarray(joined, dtype=object)


def assign_folds(
    task: TaskInfo, pool: Dataset, folds: int, seed: int, near_copies: int | None = None
) -> np.ndarray:
    """The fold (0 .. folds - 1) of every row of ``pool``, deterministic for a ``seed``."""
    groups = groups_of(pool, task.image_column, near_copies)
    if len(set(groups)) < folds:
        raise MedftError(
            f"{folds} folds need at least {folds} patients (or distinct images); the train and "
            f"validation splits hold {len(set(groups))}. Use fewer folds."
        )
    labels = list(pool.with_format(None)[task.label_column])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.empty(len(pool), dtype=int)
    cuts = splitter.split(np.zeros(len(pool)), task.fold_strata(labels, folds), groups)
    for fold, (_, held_out) in enumerate(cuts):
        fold_of[held_out] = fold
    return fold_of


def fold_splits(
    task: TaskInfo,
    train: Dataset,
    validation: Dataset,
    folds: int,
    fold: int,
    seed: int,
    near_copies: int | None = None,
) -> tuple[Dataset, Dataset]:
    """The training part and the held-out fold ``fold`` of train + validation, near copies
    (hashes within ``near_copies`` bits, as prepared) kept in one fold."""
    pool = concatenate_datasets([train, validation])
    fold_of = assign_folds(task, pool, folds, seed, near_copies)
    return (
        pool.select(np.flatnonzero(fold_of != fold)),
        pool.select(np.flatnonzero(fold_of == fold)),
    )
