"""At the end of training: the saved model's out-of-distribution statistics
(`medft.inference.ood`), from its training images' features and its validation split's.

The saved model is loaded back and scores both splits as `medft predict` will (the
processor's own evaluation preprocessing, no augmentation; DICOM settings from the
folder), batched on the trainer's device, so the statistics describe the very features
that inference measures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from medft.data.pipeline import limit
from medft.inference.classifier import Classifier, load_classifier
from medft.inference.ood import OOD_NAME, FeatureHook, OodStatistics, fit_statistics
from medft.inference.reading import ImageReader
from medft.inference.scoring import score_images

logger = logging.getLogger("medft")
# Training images the statistics are fitted on, at most (drawn at random beyond): enough
# for group means and a shrunk covariance of a few thousand features, and a bound on the
# extra pass and the memory (features x images) on the largest datasets.
MAX_TRAINING_IMAGES = 20_000


def split_features(
    classifier: Classifier,
    split: Dataset,
    batch_size: int,
    num_workers: int,
    layer: torch.nn.Module | None = None,
) -> np.ndarray:
    """The penultimate-layer features of a split's images (the input of the classifier, or of
    another ``layer``), a row each (rows in order; NaN for an image that cannot be read)."""
    hook = FeatureHook(classifier.model, layer=layer)
    reader = ImageReader(classifier, splits=[split])
    score_images(
        classifier,
        reader,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=False,
        features=hook,
    )
    return hook.values(len(split))


def readable(features: np.ndarray) -> np.ndarray:
    return ~np.isnan(features).any(axis=1)


def save_ood_statistics(
    folder: str | Path,
    train: Dataset,
    validation: Dataset,
    *,
    false_flag_rate: float,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    seed: int,
    evaluated: Dataset | None = None,
) -> tuple[OodStatistics, np.ndarray | None]:
    """Fit the statistics of the model saved in ``folder`` on (up to `MAX_TRAINING_IMAGES`
    of) its ``train`` images, set the flag threshold on ``validation``, and save them; with
    the distances of the ``evaluated`` split's images (the test split the run reports)."""
    classifier = load_classifier(folder, device=str(device))
    task = classifier.task
    train = limit(train.with_format(None), MAX_TRAINING_IMAGES, seed)  # no augmentation
    groups = task.feature_groups(task.encode(list(train[task.label_column])))
    features = split_features(classifier, train, batch_size, num_workers)
    held_out = split_features(classifier, validation.with_format(None), batch_size, num_workers)
    kept = readable(features)
    statistics = fit_statistics(
        features[kept], groups[kept], held_out[readable(held_out)], false_flag_rate
    )
    statistics.save(folder)
    distances = None
    if evaluated is not None:
        features = split_features(classifier, evaluated.with_format(None), batch_size, num_workers)
        distances = statistics.distances(features)
    logger.info(
        "Out-of-distribution flags: Mahalanobis distance (Ledoit-Wolf shrinkage %.3f) from %d "
        "training images; flagged above %.2f, set on %d validation images for a %.0f%% "
        "false-flag rate (%s)",
        statistics.shrinkage,
        statistics.training_images,
        statistics.threshold,
        statistics.validation_images,
        100 * false_flag_rate,
        OOD_NAME,
    )
    return statistics, distances
