"""The headline metrics of a bootstrap resample, from per-image weights.

A resample is given as weights: how many times each image was drawn. The scores are sorted
once per column and the predictions made once; each resample then costs a few weighted
counts (`np.bincount`) instead of a scikit-learn call per metric with its validation and
sort. The values are scikit-learn's on the drawn images, exactly (tests check every metric
against `headline_metrics` on the same draws): the bootstrap calls this a thousand times for
a split and again for every subgroup, where scikit-learn took 0.5 s a call on NIH's 25,596
test images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

WeightedMetrics = Callable[[np.ndarray], dict[str, float]]


def ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


class RankedColumn:
    """One column of scores with its binary targets, ranked once: the weighted AUROC and
    average precision of any resample in O(images)."""

    def __init__(self, targets: np.ndarray, scores: np.ndarray) -> None:
        levels, self.level = np.unique(np.asarray(scores), return_inverse=True)
        self.levels = len(levels)
        self.positives = np.flatnonzero(np.asarray(targets).astype(bool))  # often a few
        self.positive_level = self.level[self.positives]
        self.held = np.unique(self.positive_level)  # the scores some positive holds

    def counts(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weight of the positives and of the negatives at each distinct score, ascending
        (every image's weight, less the positives': weights are counts, so exactly)."""
        every = np.bincount(self.level, weights, minlength=self.levels)
        positive = np.bincount(self.positive_level, weights[self.positives], self.levels)
        return positive, every - positive

    def auroc(self, weights: np.ndarray) -> float:
        """Area under the ROC curve (ties count half), NaN without both classes; past the one
        cumulative sum, only the scores that positives hold are read."""
        positive, negative = self.counts(weights)
        up_to = np.cumsum(negative)  # negatives scored at or below each score
        held, at = positive[self.held], negative[self.held]
        return ratio(
            float((held * (up_to[self.held] - 0.5 * at)).sum()), float(held.sum() * up_to[-1])
        )

    def average_precision(self, weights: np.ndarray) -> float:
        """Average precision (scikit-learn's AUPRC), NaN without both classes."""
        positive, negative = self.counts(weights)
        if positive.sum() <= 0 or negative.sum() <= 0:
            return float("nan")
        true, false = np.cumsum(positive[::-1]), np.cumsum(negative[::-1])  # high to low
        flagged = true + false
        precision = np.divide(true, flagged, out=np.zeros_like(true), where=flagged > 0)
        return float((positive[::-1] / positive.sum() * precision).sum())


def confusion(
    labels: np.ndarray, predicted: np.ndarray, classes: int
) -> Callable[[np.ndarray], np.ndarray]:
    """The weighted confusion matrix (true x predicted) of a resample."""
    cell = np.asarray(labels).astype(np.intp) * classes + np.asarray(predicted).astype(np.intp)
    return lambda weights: np.bincount(cell, weights, minlength=classes * classes).reshape(
        classes, classes
    )


def single_label_metrics(probs: np.ndarray, labels: np.ndarray) -> WeightedMetrics:
    """Accuracy, balanced accuracy and macro-F1 of the top class, as scikit-learn computes
    them on the drawn images (classes neither drawn nor predicted left out)."""
    matrix_of = confusion(labels, probs.argmax(axis=-1), probs.shape[1])

    def metrics(weights: np.ndarray) -> dict[str, float]:
        matrix = matrix_of(weights)
        right, truth, called = np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)
        seen, present = truth > 0, (truth + called) > 0
        f1 = 2 * right[present] / (truth[present] + called[present])
        return {
            "accuracy": ratio(right.sum(), matrix.sum()),
            "balanced_accuracy": (
                float(np.mean(right[seen] / truth[seen])) if seen.any() else float("nan")
            ),
            "macro_f1": float(f1.mean()) if present.any() else float("nan"),
        }

    return metrics


def binary_metrics(probs: np.ndarray, labels: np.ndarray, cutoff: float | None) -> WeightedMetrics:
    """The single-label metrics plus AUROC, AUPRC, and sensitivity and specificity at the
    cut-off (the argmax without one; 0 where a side was not drawn, as `BinaryTask` says)."""
    top_class = single_label_metrics(probs, labels)
    positive = np.asarray(labels) == 1
    called = probs.argmax(axis=-1) == 1 if cutoff is None else probs[:, 1] >= cutoff
    ranked = RankedColumn(positive, probs[:, 1])

    def metrics(weights: np.ndarray) -> dict[str, float]:
        found = top_class(weights)
        positives, negatives = (weights * positive).sum(), (weights * ~positive).sum()
        sensitivity = ratio((weights * (positive & called)).sum(), positives)
        specificity = ratio((weights * (~positive & ~called)).sum(), negatives)
        found["sensitivity"] = 0.0 if np.isnan(sensitivity) else sensitivity
        found["specificity"] = 0.0 if np.isnan(specificity) else specificity
        found["auroc"] = ranked.auroc(weights)
        found["auprc"] = ranked.average_precision(weights)
        return found

    return metrics


def multilabel_metrics(
    probs: np.ndarray, labels: np.ndarray, cutoffs: np.ndarray, names: list[str]
) -> WeightedMetrics:
    """AUROC per finding (where both classes were drawn) and their mean, micro AUROC, and
    macro / micro F1 at the cut-offs (every finding counts in the macro mean)."""
    targets = np.asarray(labels).astype(bool)
    flagged = probs >= cutoffs
    outcomes = [(targets & flagged), (targets & ~flagged), (~targets & flagged)]
    hit, missed, false_alarm = (outcome.astype(float) for outcome in outcomes)
    columns = [RankedColumn(targets[:, i], probs[:, i]) for i in range(len(names))]
    pooled = RankedColumn(targets.ravel(), probs.ravel())

    def metrics(weights: np.ndarray) -> dict[str, float]:
        found = {}
        for name, column in zip(names, columns):
            area = column.auroc(weights)
            if not np.isnan(area):
                found[f"auroc_{name}"] = area
        areas = list(found.values())
        found["mean_auroc"] = float(np.mean(areas)) if areas else float("nan")
        hits, misses, false = (
            np.einsum("i,ij->j", weights, outcome)  # no BLAS threads
            for outcome in (hit, missed, false_alarm)
        )
        denominator = 2 * hits + misses + false
        f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)
        found["macro_f1"] = float(f1.mean())
        found["micro_f1"] = ratio(2 * hits.sum(), denominator.sum())
        found["micro_f1"] = 0.0 if np.isnan(found["micro_f1"]) else found["micro_f1"]
        found["micro_auroc"] = pooled.auroc(np.repeat(weights, len(names)))
        return found

    return metrics
