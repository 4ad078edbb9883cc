"""The training loss, with class weighting for imbalanced data, and weights for oversampling.

Single-label: cross-entropy, optionally with class weights and label smoothing;
it also takes the soft targets that MixUp / CutMix produce. Multi-label: binary
cross-entropy with logits, optionally with a ``pos_weight`` per finding.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional

from medft.data.loading import TaskInfo


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" weights, n / (classes * count); a class never seen gets 0."""
    present = np.unique(labels)
    weights = np.zeros(n_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(weights, dtype=torch.float32)


def positive_weights(targets: np.ndarray) -> torch.Tensor:
    """BCE ``pos_weight`` per finding: negatives / positives (1 for a finding never seen)."""
    positives = targets.sum(axis=0)
    negatives = len(targets) - positives
    weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def sampling_weights(labels: np.ndarray, multi_label: bool) -> torch.Tensor:
    """Per-image weights that make each class (finding) about equally likely to be drawn.

    Multi-label: an image weighs as much as its rarest finding; images with no
    finding form a class of their own.
    """
    if not multi_label:
        counts = np.bincount(labels)
        return torch.tensor(1.0 / counts[labels], dtype=torch.double)
    targets = np.asarray(labels, dtype=bool)
    per_finding = 1.0 / np.maximum(targets.sum(axis=0), 1)
    none = ~targets.any(axis=1)
    rarest = np.where(targets, per_finding, 0.0).max(axis=1)
    return torch.tensor(np.where(none, 1.0 / max(none.sum(), 1), rarest), dtype=torch.double)


def multi_hot(labels: list[list[int]], n_classes: int) -> np.ndarray:
    targets = np.zeros((len(labels), n_classes), dtype=np.float32)
    for row, indices in enumerate(labels):
        targets[row, indices] = 1.0
    return targets


def label_array(task: TaskInfo, labels: list) -> np.ndarray:
    """Class indices, or multi-hot rows for multi-label tasks."""
    return multi_hot(labels, len(task.label_names)) if task.multi_label else np.asarray(labels)


class ClassificationLoss:
    """``loss(logits, labels)`` for a task, with the weights and smoothing it was given."""

    def __init__(
        self,
        task: TaskInfo,
        weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.multi_label, self.weights, self.label_smoothing = (
            task.multi_label,
            weights,
            label_smoothing,
        )

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = self.weights.to(logits.device) if self.weights is not None else None
        if self.multi_label:
            targets = labels.float()
            if self.label_smoothing:
                targets = targets * (1 - self.label_smoothing) + self.label_smoothing / 2
            return functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)
        return functional.cross_entropy(
            logits, labels, weight=weights, label_smoothing=self.label_smoothing
        )


def build_loss(task: TaskInfo, train_labels: list, weighting: str, label_smoothing: float):
    """The loss for ``class_weighting`` (none | balanced), weights computed on the train split."""
    weights = None
    if weighting == "balanced":
        labels = label_array(task, train_labels)
        n = len(task.label_names)
        weights = positive_weights(labels) if task.multi_label else class_weights(labels, n)
    return ClassificationLoss(task, weights, label_smoothing)
