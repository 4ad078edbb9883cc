"""The multi-label kind: several findings per image, an independent sigmoid each."""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import torch
from datasets import ClassLabel, List
from scipy.special import expit, logit
from sklearn.metrics import (
    f1_score,
    roc_auc_score,
)
from torch.nn import functional

from medft.tasks.base import TaskInfo
from medft.tasks.losses import asymmetric_loss, sigmoid_focal_loss_per_finding, smoothed_findings
from medft.tasks.scores import (
    DEFAULT_THRESHOLD,
    CalibrationScores,
    CurvePanel,
    auprc_or_none,
    auroc_or_none,
    nan_if_none,
    sensitivity_specificity,
)
from medft.tasks.weighted import multilabel_metrics

NO_FINDING = "(no finding)"  # images with none of the findings, as prepare's report counts them
RARE = "rare combinations"  # the fold stratum of combinations too rare to spread over the folds
STATES = ("present", "absent")  # a finding's states in a conformal prediction set


class MultilabelTask(TaskInfo):
    """Several findings per image, each an independent sigmoid; none set means "no finding"."""

    task = "multilabel"
    main_metric = "mean_auroc"
    headline = ("mean_auroc", "micro_auroc", "macro_f1", "micro_f1")
    description = "multi-label (an independent sigmoid score per finding)"
    counted_what = "flagged findings"
    activation = "sigmoid"
    supports_per_finding_temperature = True
    conformal_method = (
        "per finding, split conformal on each state, calibrated on the images in that state "
        "(present: nonconformity 1 - p; absent: p)"
    )

    @classmethod
    def takes(cls, label_names: list[str], multi_label: bool) -> bool:
        return multi_label

    @property
    def thresholded_labels(self) -> list[str]:
        return list(self.label_names)

    def encode(self, labels):
        targets = np.zeros((len(labels), len(self.label_names)), dtype=np.float32)
        for row, indices in enumerate(labels):
            targets[row, list(indices)] = 1.0
        return targets

    def target(self, value):
        target = torch.zeros(len(self.label_names), dtype=torch.float32)
        target[list(value)] = 1.0
        return target

    def soft_targets(self, labels):
        return labels.float()

    def label_text(self, value):
        return ", ".join(self.label_names[i] for i in value) or "no finding"

    def loss_targets(self, labels):
        """Multi-hot rows, as float64."""
        return torch.as_tensor(np.asarray(labels)).double()

    def feature_groups(self, labels):
        """One group: an image carries any number of findings, so class means are ill-defined."""
        return np.zeros(len(labels), dtype=int)

    def label_feature(self):
        """A list of `ClassLabel`s."""
        return List(ClassLabel(names=self.label_names))

    @property
    def label_format(self):
        return f"`{self.label_column}` (a list of class ids)"

    def label_counts(self, values):
        """Positives per finding, then the images with none."""
        counts = Counter(self.label_names[index] for labels in values for index in labels)
        counts[NO_FINDING] = sum(1 for labels in values if not labels)
        return {name: counts[name] for name in [*self.label_names, NO_FINDING]}

    def relabelled(self, values, onto):
        """Each image's findings mapped (several onto one: their union); a dropped finding (one
        that maps to None) is not scored, and every image stays."""
        return [sorted({onto[i] for i in value if onto[i] is not None}) for value in values]

    dropped_labels = "dropped findings are not scored; every image stays"

    def split_strata(self, labels):
        """None: multi-label splits are carved without strata."""
        return None

    def fold_strata(self, labels, folds):
        """The image's combination of findings; combinations in fewer images than ``folds``
        pooled into one stratum."""
        keys = np.array(["|".join(map(str, sorted(value))) for value in labels], dtype=object)
        values, counts = np.unique(keys, return_counts=True)
        rare = set(values[counts < folds])
        return np.array([RARE if key in rare else key for key in keys], dtype=object)

    def probabilities(self, logits):
        return expit(np.asarray(logits, dtype=np.float64))

    def loss(self, logits, labels, weights, label_smoothing):
        """Binary cross-entropy per finding, with a ``pos_weight`` per finding if given."""
        targets = smoothed_findings(labels.float(), label_smoothing)
        return functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)

    def focal_loss(self, gamma, alpha, label_smoothing):
        """Sigmoid focal loss per finding; ``alpha`` and ``pos_weight`` weigh its positives."""
        return partial(
            sigmoid_focal_loss_per_finding,
            gamma=gamma,
            alpha=alpha,
            label_smoothing=label_smoothing,
        )

    def asymmetric_loss(self, gamma_neg, gamma_pos, clip, label_smoothing):
        """ASL per finding, positives weighted by ``pos_weight``."""
        return partial(
            asymmetric_loss,
            gamma_neg=gamma_neg,
            gamma_pos=gamma_pos,
            clip=clip,
            label_smoothing=label_smoothing,
        )

    def balanced_weights(self, encoded):
        """BCE ``pos_weight`` per finding: negatives / positives (1 for a finding never seen)."""
        positives = encoded.sum(axis=0)
        negatives = len(encoded) - positives
        weights = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
        return torch.tensor(weights, dtype=torch.float32)

    def sampling_weights(self, encoded):
        """An image weighs as much as its rarest finding; images with no finding form a class
        of their own."""
        targets = np.asarray(encoded, dtype=bool)
        per_finding = 1.0 / np.maximum(targets.sum(axis=0), 1)
        none = ~targets.any(axis=1)
        rarest = np.where(targets, per_finding, 0.0).max(axis=1)
        return torch.tensor(np.where(none, 1.0 / max(none.sum(), 1), rarest), dtype=torch.double)

    def metrics(self, probs, labels, cutoffs=None):
        """Per-finding and mean AUROC (over findings with both classes present), macro and
        micro F1 at the cut-offs (0.5 without)."""
        targets = labels.astype(int)
        positives = targets.sum(axis=0)
        both = np.flatnonzero((positives > 0) & (positives < len(targets)))
        if len(both) > 1:  # one call for all findings takes half the time of one call each
            areas = list(roc_auc_score(targets[:, both], probs[:, both], average=None))
        else:
            areas = [roc_auc_score(targets[:, i], probs[:, i]) for i in both]
        metrics = {f"auroc_{self.label_names[i]}": float(area) for i, area in zip(both, areas)}
        metrics["mean_auroc"] = float(np.mean(areas)) if len(both) else float("nan")
        predicted = (probs >= (DEFAULT_THRESHOLD if cutoffs is None else cutoffs)).astype(int)
        metrics["macro_f1"] = float(f1_score(targets, predicted, average="macro", zero_division=0))
        metrics["micro_f1"] = float(f1_score(targets, predicted, average="micro", zero_division=0))
        return metrics

    def headline_metrics(self, probs, labels, cutoffs):
        metrics = self.metrics(probs, labels, cutoffs)
        metrics["micro_auroc"] = nan_if_none(auroc_or_none(labels.ravel(), probs.ravel()))
        return metrics

    def weighted_metrics(self, probs, labels, cutoffs):
        cut = np.full(len(self.label_names), DEFAULT_THRESHOLD) if cutoffs is None else cutoffs
        return multilabel_metrics(probs, labels, cut, self.label_names)

    def details(self, probs, labels, cutoffs):
        """AUROC, AUPRC, the threshold, and sensitivity, specificity and F1 at it, per finding."""
        rows = {}
        for index, name in enumerate(self.label_names):
            target, score = labels[:, index].astype(int), probs[:, index]
            predicted = score >= cutoffs[index]
            sensitivity, specificity = sensitivity_specificity(target, predicted)
            rows[name] = {
                "auroc": auroc_or_none(target, score),
                "auprc": auprc_or_none(target, score),
                "threshold": float(cutoffs[index]),
                "sensitivity": sensitivity,
                "specificity": specificity,
                "f1": float(f1_score(target, predicted, zero_division=0)),
                "positives": int(target.sum()),
            }
        return {"metrics": {}, "per_finding": rows}

    def prevalence(self, labels):
        """The share of images with each finding."""
        positives = np.asarray(labels, dtype=float).reshape(-1, len(self.label_names)).sum(axis=0)
        return {
            name: float(n / max(len(labels), 1)) for name, n in zip(self.label_names, positives)
        }

    @property
    def default_threshold_method(self) -> str:
        return "f1"

    def threshold_targets(self, labels):
        return [(index, labels[:, index]) for index in range(len(self.label_names))]

    def curve_panels(self, probs, labels, cut, metrics, per_finding=None):
        """One panel per finding."""
        return [
            CurvePanel(
                name,
                labels[:, index],
                probs[:, index],
                cut[name],
                per_finding[name]["auroc"],
                per_finding[name]["auprc"],
            )
            for index, name in enumerate(self.label_names)
        ]

    def calibration_scores(self, probs, labels):
        """Every finding's probability counts as one score, true when the finding is present."""
        return CalibrationScores(
            probs,
            labels,
            "every finding's probability (true: the finding is present)",
            "predicted probability (every finding)",
            "fraction positive",
        )

    @property
    def conformal_states(self):
        """Each finding present and absent: "Mass: present", "Mass: absent", ..."""
        return [f"{name}: {state}" for name in self.label_names for state in STATES]

    @property
    def state_groups(self):
        """One group per finding: its two states."""
        return [name for name in self.label_names for _ in STATES]

    def state_probabilities(self, probs):
        """p for each finding present, 1 - p absent."""
        probs = np.asarray(probs, dtype=np.float64)
        return np.stack([probs, 1 - probs], axis=2).reshape(len(probs), -1)

    def true_states(self, labels):
        present = np.asarray(labels).astype(bool)
        return np.stack([present, ~present], axis=2).reshape(len(present), -1)

    def set_text(self, included):
        """The findings the set allows to be present, joined by |, with ? on those it allows to
        be absent too; (no finding) when it allows none."""
        pairs = np.asarray(included).reshape(-1, len(STATES))
        shown = [
            name + "?" * bool(absent)
            for name, (present, absent) in zip(self.label_names, pairs)
            if present
        ]
        return "|".join(shown) or NO_FINDING

    def prior_shift(self, training, local):
        """logit(local) - logit(training) per finding."""
        return logit(local) - logit(training)

    def csv_header(self, top_k):
        return ["findings", *self.label_names]

    def csv_cells(self, scores, cut, top_k):
        return [";".join(self.counted(scores, cut)), *(f"{p:.6f}" for p in scores)]

    def counted(self, scores, cut):
        """The findings at or above their thresholds."""
        return [label for label, p in zip(self.label_names, scores) if p >= cut[label]]

    def shown(self, scores, cut, top_k):
        """Every finding, most probable first, with its threshold and whether it is reached."""
        flagged = self.counted(scores, cut)
        order = np.argsort(-scores, kind="stable")
        rows = [
            [
                self.label_names[i],
                f"{scores[i]:.4f}",
                f"{cut[self.label_names[i]]:.4f}",
                "yes" if self.label_names[i] in flagged else "no",
            ]
            for i in order
        ]
        verdict = (
            f"Above their thresholds: {', '.join(flagged)}"
            if flagged
            else "No finding reaches its threshold"
        )
        return verdict, ["finding", "probability", "threshold", "above"], rows
