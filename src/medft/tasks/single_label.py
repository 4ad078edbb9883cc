"""The single-label kinds: one class per image, a softmax over the classes."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import label_binarize

from medft.tasks.base import TaskInfo
from medft.tasks.scores import (
    CurvePanel,
    auprc_or_none,
    auroc_or_none,
    nan_if_none,
    sensitivity_specificity,
)
from medft.tasks.weighted import binary_metrics


class MulticlassTask(TaskInfo):
    task = "multiclass"
    main_metric = "macro_f1"
    headline = ("accuracy", "balanced_accuracy", "macro_f1")

    @classmethod
    def takes(cls, label_names: list[str], multi_label: bool) -> bool:
        return not multi_label and len(label_names) != 2

    @property
    def description(self) -> str:
        return f"{len(self.label_names)}-class (softmax)"

    def details(self, probs, labels, cutoffs):
        details = super().details(probs, labels, cutoffs)
        one_hot = label_binarize(labels, classes=np.arange(len(self.label_names))).ravel()
        details["metrics"]["micro_auroc"] = auroc_or_none(one_hot, probs.ravel())
        details["metrics"]["micro_auprc"] = auprc_or_none(one_hot, probs.ravel())
        return details


class BinaryTask(TaskInfo):
    """Two classes; class 1 (e.g. `tumor`) is the positive one."""

    task = "binary"
    main_metric = "macro_f1"
    headline = ("auroc", "auprc", "sensitivity", "specificity", "accuracy", "balanced_accuracy")
    description = "binary (softmax over two classes)"

    @classmethod
    def takes(cls, label_names: list[str], multi_label: bool) -> bool:
        return not multi_label and len(label_names) == 2

    @property
    def positive(self) -> str:
        return self.label_names[1]

    @property
    def thresholded_labels(self) -> list[str]:
        return [self.positive]

    def metrics(self, probs, labels, cutoffs=None):
        """Single-label metrics plus AUROC, sensitivity and specificity. Sensitivity and
        specificity call an image positive when class 1 wins (the argmax), or, given its
        cut-off, when its probability reaches it."""
        metrics = super().metrics(probs, labels)
        predicted = probs.argmax(axis=-1) if cutoffs is None else probs[:, 1] >= cutoffs[0]
        sensitivity, specificity = sensitivity_specificity(np.asarray(labels) == 1, predicted)
        metrics["sensitivity"] = 0.0 if sensitivity is None else sensitivity
        metrics["specificity"] = 0.0 if specificity is None else specificity
        auroc = auroc_or_none(labels, probs[:, 1])
        if auroc is not None:
            metrics["auroc"] = auroc
        return metrics

    def headline_metrics(self, probs, labels, cutoffs):
        metrics = self.metrics(probs, labels, cutoffs)
        metrics["auroc"] = metrics.get("auroc", float("nan"))
        metrics["auprc"] = nan_if_none(auprc_or_none(labels, probs[:, 1]))
        return metrics

    def weighted_metrics(self, probs, labels, cutoffs):
        return binary_metrics(probs, labels, None if cutoffs is None else float(cutoffs[0]))

    def threshold_targets(self, labels):
        return [(1, np.asarray(labels) == 1)]

    def curve_panels(self, probs, labels, cut, metrics, per_finding=None):
        """The positive class against the other."""
        negative, positive = self.label_names
        return [
            CurvePanel(
                f"{positive} vs {negative}",
                (np.asarray(labels) == 1) * 1,
                probs[:, 1],
                cut.get(positive),
                metrics.get("auroc"),
                metrics.get("auprc"),
            )
        ]

    def csv_header(self, top_k):
        return [*super().csv_header(top_k), "decision"]

    def csv_cells(self, scores, cut, top_k):
        return [*super().csv_cells(scores, cut, top_k), self.decision(scores, cut)]

    def shown(self, scores, cut, top_k):
        """The decision at the stored threshold, and both classes' probabilities."""
        _, columns, rows = super().shown(scores, cut, top_k)
        verdict = (
            f"Decision: {self.decision(scores, cut)} ({self.positive} probability "
            f"{scores[1]:.3f}, threshold {cut[self.positive]:.3f})"
        )
        return verdict, columns, rows

    def decision(self, scores: np.ndarray, cut: dict[str, float]) -> str:
        """The positive class when its score reaches the threshold, else the other."""
        return self.positive if scores[1] >= cut[self.positive] else self.label_names[0]
