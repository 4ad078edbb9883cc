"""The label prevalence a model was trained on, and the prior shift that adapts its scores to a
site whose prevalence differs.

The end of training saves the training split's label counts beside the model
(`training_labels.json`). `medft calibrate --prior-shift` compares them with the labelled
local sample's and folds the difference into the classifier's bias (`TaskInfo.prior_shift`:
+ log(local / training) per class, or + logit(local) - logit(training) per finding): the
Bayes correction for a change of priors when p(image | label) stays the same (Saerens et al.
2002). Prevalences are the Jeffreys estimate (count + 0.5) / (images + 1), never 0 or 1, so a
label the local sample lacks moves its logit by a finite amount.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medft.errors import MedftError
from medft.tasks import TaskInfo

TRAINING_LABELS_NAME = "training_labels.json"


def prevalence(task: TaskInfo, counts: dict[str, int], images: int) -> np.ndarray:
    """Each label's share of ``images``, from its count: (count + 0.5) / (images + 1)."""
    return np.array([(counts[name] + 0.5) / (images + 1) for name in task.label_names])


def save_training_labels(folder: Path, task: TaskInfo, values: list) -> Path:
    """training_labels.json: the training split's images per label (``values``: its label
    column), what `medft calibrate --prior-shift` compares a local sample with."""
    content = {
        "task": task.task,
        "labels": task.label_names,
        "images": len(values),
        "counts": task.label_counts(values),
    }
    path = Path(folder) / TRAINING_LABELS_NAME
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def training_prevalence(folder: Path, task: TaskInfo) -> np.ndarray:
    """The prevalence of each label in the training split of the model saved in ``folder``."""
    path = Path(folder) / TRAINING_LABELS_NAME
    if not path.is_file():
        raise MedftError(
            f"--prior-shift needs the training label prevalence, which {folder} does not hold "
            f"({TRAINING_LABELS_NAME}: models trained by an older medft lack it); train the "
            "model again, or calibrate without --prior-shift."
        )
    try:
        content = json.loads(path.read_text())
        if content["labels"] != task.label_names:
            raise MedftError(
                f"{path} counts the labels {', '.join(content['labels'])}, not the model's "
                f"{', '.join(task.label_names)}; remove it and calibrate without --prior-shift."
            )
        return prevalence(task, content["counts"], int(content["images"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MedftError(
            f"{path} is not a {TRAINING_LABELS_NAME} written by medft ({error}); calibrate "
            "without --prior-shift."
        ) from None


@dataclass(frozen=True)
class PriorShift:
    """The training and local prevalence of each label, and what the shift adds to its logit."""

    training: np.ndarray
    local: np.ndarray
    shift: np.ndarray

    def to_json(self, task: TaskInfo) -> dict[str, dict[str, float]]:
        return {
            name: {"training": float(t), "local": float(loc), "logit_shift": float(s)}
            for name, t, loc, s in zip(task.label_names, self.training, self.local, self.shift)
        }


def prior_shift(task: TaskInfo, folder: Path, local_values: list) -> PriorShift:
    """The shift from the training prevalence of the model in ``folder`` to that of the local
    sample whose label column is ``local_values``."""
    training = training_prevalence(folder, task)
    local = prevalence(task, task.label_counts(local_values), len(local_values))
    return PriorShift(training, local, task.prior_shift(training, local))


def shift_text(content: dict[str, Any], shown: int = 14) -> str:
    """A prior shift's `to_json` in words: label training -> local prevalence (logit shift)."""
    items = [
        f"{name} {row['training']:.3f} -> {row['local']:.3f} ({row['logit_shift']:+.2f})"
        for name, row in list(content.items())[:shown]
    ]
    more = f", ... ({len(content)} in all)" if len(content) > shown else ""
    return ", ".join(items) + more
