"""MixUp and CutMix of a training batch, for single-label and multi-label targets alike.

timm's `Mixup` mixes the images (MixUp or CutMix, switching at random, with the
area-corrected mixing weight for CutMix) and returns soft targets. Asking it to
mix the targets ``0 .. n-1`` of an ``n``-image batch gives back the mixing
matrix itself; multiplying it with the one-hot (single-label) or multi-hot
(multi-label) targets mixes any kind of target the same way the images were mixed.
"""

from __future__ import annotations

import torch
from timm.data import Mixup

from medft.tasks import TaskInfo


class BatchMixer:
    """``mixer(pixel_values, labels) -> (mixed pixel values, soft targets)``."""

    def __init__(
        self,
        task: TaskInfo,
        mixup_alpha: float,
        cutmix_alpha: float,
        probability: float = 1.0,
    ) -> None:
        self.task = task
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=probability,
            switch_prob=0.5,
            mode="batch",
            label_smoothing=0.0,  # smoothing belongs to the loss (label_smoothing_factor)
        )

    def __call__(
        self, pixel_values: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(pixel_values)
        if n % 2:  # timm mixes a batch with its reverse, which needs an even count
            return pixel_values, labels
        self.mixup.num_classes = n  # the "classes" are the batch's own images
        mixed, matrix = self.mixup(pixel_values, torch.arange(n, device=pixel_values.device))
        return mixed, matrix[:, :n] @ self.task.soft_targets(labels)
