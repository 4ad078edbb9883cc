"""The training loss, with class weighting for imbalanced data, and weights for oversampling.

The task decides the loss (`TaskInfo.loss`: cross-entropy, which also takes the soft
targets of MixUp / CutMix, or binary cross-entropy per finding) and what "balanced"
weights are (class weights, or a ``pos_weight`` per finding); this module computes
them on the train split and carries them to the device.
"""

from __future__ import annotations

import torch

from medft.tasks import TaskInfo


class ClassificationLoss:
    """``loss(logits, labels)`` for a task, with the weights and smoothing it was given."""

    def __init__(
        self,
        task: TaskInfo,
        weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.task, self.weights, self.label_smoothing = task, weights, label_smoothing

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.weights is not None and self.weights.device != logits.device:
            self.weights = self.weights.to(logits.device)  # once: a copy every step would wait
        return self.task.loss(logits, labels, self.weights, self.label_smoothing)


def build_loss(task: TaskInfo, train_labels: list, weighting: str, label_smoothing: float):
    """The loss for ``class_weighting`` (none | balanced), weights computed on the train split."""
    weights = task.balanced_weights(task.encode(train_labels)) if weighting == "balanced" else None
    return ClassificationLoss(task, weights, label_smoothing)


def sampling_weights(task: TaskInfo, train_labels: list) -> torch.Tensor:
    """Per-image weights for `sampler: weighted`: each class (finding) about equally likely."""
    return task.sampling_weights(task.encode(train_labels))
