"""The training loss, with class weighting for imbalanced data, and weights for oversampling.

The recipe names the loss (`LossOptions`: the task's cross-entropy, focal or asymmetric);
the task decides what it is for its kind (`TaskInfo.loss`: cross-entropy, which also takes
the soft targets of MixUp / CutMix, or binary cross-entropy per finding; `focal_loss`,
`asymmetric_loss`: `medft.tasks.losses`, or one line refusing it) and what "balanced"
weights are (class weights, or a ``pos_weight`` per finding); this module computes them on
the train split and carries them to the device.
"""

from __future__ import annotations

from functools import partial

import torch

from medft.config.losses import LossOptions
from medft.tasks import TaskInfo
from medft.tasks.losses import TrainingLoss


class ClassificationLoss:
    """``loss(logits, labels)``: a task's training loss, with the weights it was given."""

    def __init__(self, loss: TrainingLoss, weights: torch.Tensor | None = None) -> None:
        self.loss, self.weights = loss, weights

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.weights is not None and self.weights.device != logits.device:
            self.weights = self.weights.to(logits.device)  # once: a copy every step would wait
        return self.loss(logits, labels, self.weights)


def training_loss(task: TaskInfo, options: LossOptions, label_smoothing: float) -> TrainingLoss:
    """The task's loss of the name ``options.loss``, with its settings; a `MedftError` for a
    loss the task cannot train with."""
    if options.loss == "focal":
        return task.focal_loss(options.focal_gamma, options.focal_alpha, label_smoothing)
    if options.loss == "asymmetric":
        return task.asymmetric_loss(
            options.asl_gamma_neg, options.asl_gamma_pos, options.asl_clip, label_smoothing
        )
    return partial(task.loss, label_smoothing=label_smoothing)


def build_loss(
    task: TaskInfo,
    train_labels: list,
    weighting: str,
    label_smoothing: float,
    options: LossOptions | None = None,
) -> ClassificationLoss:
    """The loss ``options`` names (default: the task's cross-entropy) for ``class_weighting``
    (none | balanced), weights computed on the train split."""
    loss = training_loss(task, options or LossOptions(), label_smoothing)
    weights = task.balanced_weights(task.encode(train_labels)) if weighting == "balanced" else None
    return ClassificationLoss(loss, weights)


def sampling_weights(task: TaskInfo, train_labels: list) -> torch.Tensor:
    """Per-image weights for `sampler: weighted`: each class (finding) about equally likely."""
    return task.sampling_weights(task.encode(train_labels))
