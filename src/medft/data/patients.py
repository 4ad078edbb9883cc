"""Each image's patient, as folds and the bootstrap group images: one reading of `patient_id`.

`medft prepare` gives every row a patient id, but datasets prepared by older versions, Hub
datasets and CSVs can lack some. A row without one is a patient of its own (its image),
never pooled with the other rows lacking one into a single "None" patient.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # datasets is imported where a dataset is read, not by the options' modules
    from datasets import Dataset

PATIENT_COLUMN = "patient_id"
IMAGE_ID_COLUMN = "image_id"


def is_missing(value) -> bool:
    return value is None or not str(value).strip()


def patient_keys(
    ids: Sequence, own_keys: Callable[[list[int]], list[str]] | None = None
) -> np.ndarray:
    """``ids`` as group keys: a known id is its patient; a missing one is the row alone, keyed
    by ``own_keys(rows)`` (what identifies those rows' images), else by its position."""
    keys = np.array([f"patient {value}" for value in ids], dtype=object)
    missing = [row for row, value in enumerate(ids) if is_missing(value)]
    if missing:
        own = own_keys(missing) if own_keys else [str(row) for row in missing]
        keys[missing] = [f"image {key}" for key in own]
    return keys


def image_digests(dataset: Dataset, image_column: str) -> list[str]:
    """A digest of each row's stored image bytes: byte-identical copies share one."""
    from datasets import Image as ImageFeature

    stored = dataset.with_format(None).cast_column(image_column, ImageFeature(decode=False))
    return [
        hashlib.blake2b(row["bytes"] or row["path"].encode(), digest_size=16).hexdigest()
        for row in stored[image_column]
    ]


def image_keys(dataset: Dataset, image_column: str) -> list[str]:
    """What identifies each row's image: its `image_id` (a file's frames share it), else a
    digest of its bytes (which stays the same when rows are pooled from several splits)."""
    if IMAGE_ID_COLUMN in dataset.column_names:
        return [str(value) for value in dataset.with_format(None)[IMAGE_ID_COLUMN]]
    return image_digests(dataset, image_column)


def patient_groups(dataset: Dataset, image_column: str) -> np.ndarray | None:
    """Each row's patient (read past any transform), or None when the data has no
    `patient_id` column; a row without an id is its own image's group."""
    if PATIENT_COLUMN not in dataset.column_names:
        return None
    ids = list(dataset.with_format(None)[PATIENT_COLUMN])
    return patient_keys(ids, lambda rows: image_keys(dataset.select(rows), image_column))
