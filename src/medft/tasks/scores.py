"""What the task types share: metric helpers (scikit-learn, with undefined cases as None) and the
plain records the figures draw from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    roc_auc_score,
)

DEFAULT_THRESHOLD = 0.5


def auroc_or_none(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None when the targets hold a single class (AUROC is undefined then)."""
    if len(np.unique(targets)) < 2:
        return None
    return float(roc_auc_score(targets, scores))


def auprc_or_none(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (the area under the precision-recall curve), or None for one class."""
    if len(np.unique(targets)) < 2:
        return None
    return float(average_precision_score(targets, scores))


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def sensitivity_specificity(targets: np.ndarray, predicted: np.ndarray) -> tuple[float | None, ...]:
    """Recall of the positives and of the negatives (None where a side has no case)."""
    targets, predicted = np.asarray(targets).astype(bool), np.asarray(predicted).astype(bool)
    positives, negatives = int(targets.sum()), int((~targets).sum())
    sensitivity = int((predicted & targets).sum()) / positives if positives else None
    specificity = int((~predicted & ~targets).sum()) / negatives if negatives else None
    return sensitivity, specificity


@dataclass
class CurvePanel:
    """One two-class problem to draw: the positive class, one finding, or all classes one-vs-rest.

    ``auroc`` and ``auprc`` are the report's numbers, so the plot and metrics.json agree."""

    title: str
    targets: np.ndarray
    scores: np.ndarray
    threshold: float | None = None
    auroc: float | None = None
    auprc: float | None = None


@dataclass(frozen=True)
class CalibrationScores:
    """What a reliability diagram bins: one score per item and whether it came true, with
    what they are in words."""

    scores: np.ndarray
    true: np.ndarray
    scored: str  # what a score is, and what "true" means
    score_axis: str  # the diagram's axes
    true_axis: str
