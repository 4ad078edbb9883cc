"""The losses for long-tailed and multi-label data that a task trains with beside its
cross-entropy, mixed into `TaskInfo` (`SingleLabelLosses`); `MultilabelTask` overrides them.

Focal loss (Lin et al. 2017) scales each image's cross-entropy by (1 - p_t)^gamma, p_t the
probability the model gives the target, so that the many easy images of common classes weigh
little: a softmax over the classes for one label per image, torchvision's sigmoid focal loss
per finding for several. The asymmetric loss (ASL, Ridnik et al. 2021; timm's
`AsymmetricLossMultiLabel`) focuses a finding's positives and negatives apart and shifts an
easy negative's probability down by a margin: it is defined for independent findings, and a
single-label task refuses it. With gamma 0 (and no margin) each is the task's cross-entropy,
averaged as it is. Each takes the weights `class_weighting` computes (a weight per class, the
alpha_t of Lin et al.; a finding's positives' ``pos_weight``) and label smoothing as the
cross-entropy does. A loss here is ``loss(logits, labels, weights)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from timm.loss import AsymmetricLossMultiLabel
from torch.nn import functional
from torchvision.ops import sigmoid_focal_loss

from medft.errors import MedftError

TrainingLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
NO_ALPHA = -1.0  # torchvision's value for "no alpha weighting"


def softmax_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    gamma: float,
    label_smoothing: float,
) -> torch.Tensor:
    """(1 - p_t)^gamma times each image's cross-entropy (class weights and smoothing as
    `cross_entropy` applies them), p_t the probability given to the target (to a mixed
    target, its share of each class); averaged as `cross_entropy` averages: over the images'
    class weights for class indices, else over the images."""
    cross_entropy = functional.cross_entropy(
        logits, labels, weight=weights, label_smoothing=label_smoothing, reduction="none"
    )
    soft = labels.is_floating_point()
    targets = labels if soft else functional.one_hot(labels, logits.shape[-1])
    target_probability = (targets * logits.float().softmax(-1)).sum(-1)
    focal = (1 - target_probability).pow(gamma) * cross_entropy
    if weights is None or soft:
        return focal.mean()
    return focal.sum() / weights[labels].sum()


def smoothed_findings(targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Multi-hot targets moved towards 0.5 by ``label_smoothing``."""
    return targets * (1 - label_smoothing) + label_smoothing / 2 if label_smoothing else targets


def sigmoid_focal_loss_per_finding(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    gamma: float,
    alpha: float | None,
    label_smoothing: float,
) -> torch.Tensor:
    """torchvision's sigmoid focal loss per finding, a finding's positives weighted by its
    ``pos_weight`` (mixed targets: by their positive share), averaged over images and
    findings."""
    targets = smoothed_findings(labels.float(), label_smoothing)
    alpha = NO_ALPHA if alpha is None else alpha
    loss = sigmoid_focal_loss(logits.float(), targets, alpha=alpha, gamma=gamma)
    if weights is not None:
        loss = loss * (1 + (weights - 1) * targets)
    return loss.mean()


def asymmetric_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    gamma_neg: float,
    gamma_pos: float,
    clip: float,
    label_smoothing: float,
) -> torch.Tensor:
    """timm's ASL, averaged over images and findings like the binary cross-entropy it
    replaces (the paper sums), positives weighted by ``pos_weight``."""
    asl = AsymmetricLossMultiLabel(
        gamma_neg=gamma_neg,
        gamma_pos=gamma_pos,
        clip=clip,
        smoothing=label_smoothing,
        reduction="mean",
        pos_weight=weights,
    )
    return asl(logits, labels)


class SingleLabelLosses:
    """One label per image: softmax focal loss; the asymmetric loss refused."""

    def focal_loss(self, gamma: float, alpha: float | None, label_smoothing: float) -> TrainingLoss:
        """Softmax focal loss; class weights (`class_weighting`) are its alpha_t."""
        if alpha is not None:
            raise MedftError(
                "focal_alpha weighs a finding's positives against its negatives (multi-label "
                "data); this dataset has one label per image: weigh its classes with "
                "class_weighting: balanced."
            )
        return partial(softmax_focal_loss, gamma=gamma, label_smoothing=label_smoothing)

    def asymmetric_loss(
        self, gamma_neg: float, gamma_pos: float, clip: float, label_smoothing: float
    ) -> TrainingLoss:
        raise MedftError(
            "loss: asymmetric (ASL) focuses each finding's positives and negatives apart and "
            "is for multi-label data; this dataset has one label per image: use loss: focal."
        )
