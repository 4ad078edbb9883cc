"""The train curve from the training passes themselves: each step's logits and targets kept on
the device (no host sync per step), scored with the task's metrics once per logged interval.

Re-scoring a training sample at every evaluation (``train_metrics_samples``) costs a second
pass over those images; the running scores cost nothing but memory for the logits (an
epoch of NIH ChestX-ray14: 78,000 x 14 floats, 4 MB). They are of augmented images and of
weights that change during the epoch, hence their name, ``train_aug_<metric>``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import distributed

from medft.tasks import TaskInfo

PREFIX = "train_aug_"


class RunningScores:
    """``add`` each training batch's logits and targets; ``metrics`` scores those added since
    the last call, gathered from every process, and starts afresh."""

    def __init__(self, task: TaskInfo) -> None:
        self.task = task
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.logits.append(logits.detach())
        self.labels.append(labels.detach())

    def metrics(self) -> dict[str, float]:
        if not self.logits:
            return {}
        logits = torch.cat(self.logits).float().cpu().numpy()
        labels = torch.cat(self.labels).cpu().numpy()
        self.logits, self.labels = [], []
        if distributed.is_initialized() and distributed.get_world_size() > 1:
            logits, labels = np.concatenate(everyones(logits)), np.concatenate(everyones(labels))
        scores = self.task.metrics(self.task.probabilities(logits), labels)
        return {PREFIX + name: value for name, value in scores.items()}


def everyones(array: np.ndarray) -> list[np.ndarray]:
    """``array`` from every process (each may hold a different number of rows)."""
    arrays: list[np.ndarray | None] = [None] * distributed.get_world_size()
    distributed.all_gather_object(arrays, array)
    return arrays
