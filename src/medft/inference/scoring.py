"""Scoring batches: the images `ImageReader` reads, batched by a `DataLoader` and scored by a
model, or every member of an ensemble, on the GPU when there is one; probabilities averaged
over test-time views and members, and the reason each unreadable item failed."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from medft.inference.classifier import Classifier
from medft.inference.onnx_model import OnnxClassifier
from medft.inference.ood import FeatureHook
from medft.inference.reading import ImageReader, collate_images
from medft.inference.tta import ORIGINAL, View
from medft.progress import progress_bar


def score_images(
    classifier: Classifier | OnnxClassifier,
    reader: ImageReader | Sequence[tuple[int, torch.Tensor | None, str | None]],
    *,
    batch_size: int,
    num_workers: int,
    progress: bool = True,
    views: Sequence[View] = (ORIGINAL,),
    logits: bool = False,
    features: FeatureHook | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Probabilities per item (softmax or sigmoid, averaged over the test-time ``views``; NaN
    rows for unreadable items), or with ``logits`` the raw logits, and the reason each
    unreadable item failed. ``reader``'s items are (index, pixels, None) or (index, None,
    reason), as `ImageReader` reads them or a caller has made them. ``features``, a hook on
    the classifier's model, keeps each item's features from the same forward passes."""
    scores = (lambda raw: raw) if logits else classifier.task.probabilities
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=classifier.device.type == "cuda",
    )
    probs = np.full((len(reader), len(classifier.task.label_names)), np.nan)
    errors: dict[int, str] = {}
    hooked = features.hooked() if features is not None else nullcontext()
    bar = progress_bar(total=len(reader), desc="scoring", unit="img", disable=not progress)
    with hooked, bar:
        for indices, pixels, failed in loader:
            if pixels is not None:
                outputs = [classifier.logits(pixels, view) for view in views]
                probs[indices] = np.mean([scores(output) for output in outputs], axis=0)
                if features is not None:
                    features.keep(indices)
            errors.update(failed)
            bar.update(len(indices) + len(failed))
    return probs, errors


def score_members(
    members: Sequence[Classifier | OnnxClassifier],
    files: Sequence[Path] = (),
    splits: Sequence[Dataset] = (),
    *,
    frames: Sequence[int | None] = (),
    batch_size: int,
    num_workers: int,
    progress: bool = True,
    views: Sequence[View] = (ORIGINAL,),
    features: FeatureHook | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """`score_images` with every member (each reading through its own processor and DICOM
    settings), the probabilities averaged; an item one member cannot read is unreadable.
    ``features``: a hook on one member's model, which keeps that member's features."""
    probs, errors = [], {}
    for member in members:
        reader = ImageReader(member, files, splits, frames)
        member_probs, member_errors = score_images(
            member,
            reader,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            views=views,
            features=features,
        )
        probs.append(member_probs)
        errors |= member_errors
    return np.mean(probs, axis=0), errors


def score_split(
    members: Sequence[Classifier | OnnxClassifier],
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    views: Sequence[View] = (ORIGINAL,),
    features: FeatureHook | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """`score_members` over one split of a prepared dataset (rows in order)."""
    return score_members(
        members,
        splits=[dataset],
        batch_size=batch_size,
        num_workers=num_workers,
        views=views,
        features=features,
    )
