"""Classification metrics for each task type, computed with scikit-learn on probabilities.

`task_metrics` is what the Trainer reports at every evaluation; the same
functions score the test split, so the training logs, `test_results.json` and
the model card agree.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.special import expit, softmax
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
    roc_auc_score,
)
from transformers import EvalPrediction

from medft.data.loading import TaskInfo


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax over classes, or an independent sigmoid per label (what `pipeline()` reports)."""
    logits = np.asarray(logits, dtype=np.float64)
    return expit(logits) if multi_label else softmax(logits, axis=-1)


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


def single_label_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = probs.argmax(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UndefinedMetricWarning, UserWarning))
        return {
            "accuracy": float(accuracy_score(labels, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
            "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        }


def binary_metrics(
    probs: np.ndarray, labels: np.ndarray, threshold: float | None = None
) -> dict[str, float]:
    """Single-label metrics plus AUROC, sensitivity and specificity; class 1 is positive.

    Sensitivity and specificity call an image positive when class 1 wins (the
    argmax), or, given a ``threshold``, when its probability is at least that.
    """
    metrics = single_label_metrics(probs, labels)
    predicted = probs.argmax(axis=-1) if threshold is None else (probs[:, 1] >= threshold) * 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        recall = recall_score(labels, predicted, labels=[0, 1], average=None, zero_division=0)
    metrics["sensitivity"], metrics["specificity"] = float(recall[1]), float(recall[0])
    auroc = auroc_or_none(labels, probs[:, 1])
    if auroc is not None:
        metrics["auroc"] = auroc
    return metrics


def multilabel_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    label_names: list[str],
    threshold: float | np.ndarray = 0.5,
) -> dict[str, float]:
    """Per-finding and mean AUROC (over findings with both classes present), F1 at a threshold
    (one for all findings, or an array of one per finding)."""
    targets = targets.astype(int)
    positives = targets.sum(axis=0)
    both = np.flatnonzero((positives > 0) & (positives < len(targets)))
    if len(both) > 1:  # one call for all findings takes half the time of one call each
        areas = list(roc_auc_score(targets[:, both], probs[:, both], average=None))
    else:
        areas = [roc_auc_score(targets[:, i], probs[:, i]) for i in both]
    metrics = {f"auroc_{label_names[i]}": float(area) for i, area in zip(both, areas)}
    metrics["mean_auroc"] = float(np.mean(areas)) if len(both) else float("nan")
    predicted = (probs >= threshold).astype(int)
    metrics["macro_f1"] = float(f1_score(targets, predicted, average="macro", zero_division=0))
    metrics["micro_f1"] = float(f1_score(targets, predicted, average="micro", zero_division=0))
    return metrics


def metrics_for(
    task: TaskInfo,
    probs: np.ndarray,
    labels: np.ndarray,
    threshold: float | np.ndarray | None = None,
) -> dict[str, float]:
    """The task's metrics; ``threshold`` (the positive class's, or one per finding) replaces
    the argmax (binary) or 0.5 (multi-label) where given."""
    if task.multi_label:
        return multilabel_metrics(
            probs, labels, task.label_names, 0.5 if threshold is None else threshold
        )
    if task.task == "binary":
        return binary_metrics(probs, labels, threshold)
    return single_label_metrics(probs, labels)


def task_metrics(task: TaskInfo) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics` for this task."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return metrics_for(task, probabilities(logits, task.multi_label), prediction.label_ids)

    return compute
