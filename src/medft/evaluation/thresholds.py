"""Decision thresholds on a model's probabilities, tuned on the validation split.

A binary model calls an image positive when the positive class's probability
reaches its threshold; a multi-label model flags each finding whose probability
reaches that finding's threshold. `medft evaluate` (and the trainer after
training) tunes them on the validation split, by Youden's J or by F1, and saves
them as `thresholds.json` beside the metrics; `medft predict` applies them.
Multi-class models need none: the top class is the prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from medft.errors import MedftError
from medft.tasks import DEFAULT_THRESHOLD, TaskInfo

THRESHOLDS_NAME = "thresholds.json"


def youden_threshold(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """The score cut-off maximising Youden's J = sensitivity + specificity - 1 (None: one class)."""
    if len(np.unique(targets)) < 2:
        return None
    false_positive_rate, true_positive_rate, cuts = roc_curve(targets, scores)
    best = int(np.argmax(true_positive_rate - false_positive_rate))
    return float(min(cuts[best], 1.0))  # roc_curve's first cut-off is +inf


def f1_threshold(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """The score cut-off maximising F1 (None when there is no positive)."""
    if not np.any(targets):
        return None
    precision, recall, cuts = precision_recall_curve(targets, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return float(cuts[int(np.argmax(f1[:-1]))])  # the last point has no cut-off


TUNERS = {"youden": youden_threshold, "f1": f1_threshold}


@dataclass
class Thresholds:
    """Per-label cut-offs on the probability: the binary positive class, or every finding."""

    values: dict[str, float]
    method: str
    tuned_on: str | None  # the split they were tuned on; None for fixed values
    defaulted: list[str] = field(default_factory=list)  # undefined on that split: left at 0.5

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tuned_on": self.tuned_on,
            "values": self.values,
            "defaulted": self.defaulted,
        }


def threshold_method(task: TaskInfo, method: str) -> str:
    """``method``, with auto resolved: Youden's J for binary, F1 per finding for multi-label."""
    return task.default_threshold_method if method == "auto" else method


def tune_thresholds(
    task: TaskInfo, probs: np.ndarray, labels: np.ndarray, method: str, split: str
) -> Thresholds | None:
    """Cut-offs tuned on one split's ``probs`` and ``labels``: the binary positive class's, or
    each finding's; a label whose cut-off is undefined there (one class only) keeps 0.5.
    None for tasks without thresholds (multi-class: the top class decides)."""
    if not task.thresholded_labels:
        return None
    method = threshold_method(task, method)
    values, defaulted = {}, []
    for name, (column, target) in zip(task.thresholded_labels, task.threshold_targets(labels)):
        tuned = TUNERS[method](target, probs[:, column])
        if tuned is None:
            defaulted.append(name)
        values[name] = DEFAULT_THRESHOLD if tuned is None else tuned
    return Thresholds(values, method, split, defaulted)


def fixed_thresholds(task: TaskInfo, value: float, method: str) -> Thresholds | None:
    """``value`` for every thresholded label (``method`` says why: given, default)."""
    if not task.thresholded_labels:
        return None
    return Thresholds(dict.fromkeys(task.thresholded_labels, value), method, None)


def save_thresholds(thresholds: Thresholds, task: TaskInfo, path: Path) -> Path:
    """`thresholds.json`: what `medft predict` applies, with the labels it was tuned for."""
    content = {"task": task.task, "labels": task.label_names, **thresholds.to_json()}
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def load_thresholds(path: Path, task: TaskInfo) -> Thresholds:
    """Thresholds saved by `save_thresholds` for a model with ``task``'s labels."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MedftError(
            f"{path} is not a thresholds file written by medft evaluate ({error}); "
            "run `medft evaluate` again or remove it."
        ) from None
    return thresholds_from_json(content, path, task)


def thresholds_from_json(content: Any, path: Path, task: TaskInfo) -> Thresholds:
    """`Thresholds.to_json`'s content, read back from ``path`` (thresholds.json, or the
    preprocessor.json of an ONNX export) for a model with ``task``'s labels."""
    try:
        values = {str(k): float(v) for k, v in content["values"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise MedftError(
            f"{path} does not hold thresholds as medft evaluate writes them ({error}); "
            "run `medft evaluate` again or remove it."
        ) from None
    expected = task.thresholded_labels
    if sorted(values) != sorted(expected):
        raise MedftError(
            f"{path} holds thresholds for {', '.join(values)}, but the model predicts "
            f"{', '.join(expected)}; run `medft evaluate` on this model to write new ones."
        )
    return Thresholds(
        values, content.get("method", "?"), content.get("tuned_on"), content.get("defaulted", [])
    )


def cutoffs(task: TaskInfo, thresholds: Thresholds | None) -> np.ndarray | None:
    """The thresholds as the task's metrics take them: one per thresholded label."""
    return None if thresholds is None else task.cutoffs(thresholds.values)
