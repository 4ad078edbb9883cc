"""The task type (binary, multi-class, multi-label) as one abstraction, on the ground floor.

What varies with the task type lives here and nowhere else: how labels are
encoded, how logits become probabilities, the loss, the metrics and which are
headlines, which labels get decision thresholds and how they are tuned, what the
ROC / PR figures draw, what the calibration scores, the columns of
`medft predict`'s CSV, the groups out-of-distribution distances centre on, and how a
dataset stores the labels and splits and folds are stratified by them. The rest of
medft asks the task object.

`TaskInfo(label_names, multi_label)` returns the right kind, from the registry each
kind adds itself to when its class is made (`TASK_TYPES`): the kind that `takes` those
labels, `MultilabelTask` for several labels per image, else `BinaryTask` (two classes) or
`MulticlassTask`. A kind added later may take some of an earlier kind's labels, and is
asked first. `TaskInfo` itself answers as a single-label task; the kinds override what
differs. The kind is read in one place for each thing that records it: a dataset's label
feature (`from_features`), a saved model's config (`from_model_config`), a file that
names the task (`from_name`: preprocessor.json, metrics.json, prepare_report.json), or
what a `medft prepare` reader found (`prepared`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import ClassLabel, Features, List, Sequence
from scipy.special import softmax
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from sklearn.preprocessing import label_binarize
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional

from medft.tasks.losses import SingleLabelLosses
from medft.tasks.prediction_sets import SingleLabelSets
from medft.tasks.scores import (
    CalibrationScores,
    CurvePanel,
)
from medft.tasks.weighted import WeightedMetrics, single_label_metrics

PROBLEM_TYPES = {True: "multi_label_classification", False: "single_label_classification"}
LABEL_COLUMNS = {True: "labels", False: "label"}  # multi-label or not: the prepared column
TOP_K = (3, 5)
TASK_TYPES: dict[str, type[TaskInfo]] = {}  # task name -> its kind; each kind adds itself


def kind_taking(label_names: list[str], multi_label: bool) -> type[TaskInfo]:
    """The kind for labels like these: of the kinds that take them, the one added last."""
    return next(
        kind for kind in reversed(TASK_TYPES.values()) if kind.takes(label_names, multi_label)
    )


@dataclass(frozen=True)
class TaskInfo(SingleLabelSets, SingleLabelLosses):
    """What a model must predict: the label names, and one label or several per image."""

    label_names: list[str]
    multi_label: bool
    image_column: str = "image"
    label_column: str = "label"

    task: ClassVar[str]  # binary | multiclass | multilabel
    main_metric: ClassVar[str]  # what picks the best epoch
    headline: ClassVar[tuple[str, ...]]  # the metrics that get confidence intervals
    description: ClassVar[str]  # for the model card
    activation: ClassVar[str] = "softmax"  # logits -> probabilities, named for ONNX users
    supports_per_finding_temperature: ClassVar[bool] = False  # a temperature per label

    def __new__(cls, label_names: list[str], multi_label: bool, *args: Any, **kwargs: Any):
        return object.__new__(kind_taking(label_names, multi_label))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        TASK_TYPES[cls.task] = cls

    @classmethod
    def takes(cls, label_names: list[str], multi_label: bool) -> bool:
        """Whether this kind is the one for these labels (one per image, or several)."""
        raise NotImplementedError

    def __getnewargs_ex__(self) -> tuple[tuple, dict]:  # pickling (DataLoader workers)
        return (self.label_names, self.multi_label), {}

    # where the kind is read -----------------------------------------------------------------

    @classmethod
    def prepared(cls, label_names: list[str], multi_label: bool) -> TaskInfo:
        """Labels as `medft prepare` stores them: a class id in column `label`, or a list of
        class ids in `labels` (multi-label)."""
        return cls(list(label_names), multi_label, label_column=LABEL_COLUMNS[multi_label])

    @classmethod
    def from_name(cls, task: str, label_names: list[str]) -> TaskInfo:
        """The task a file names (binary, multiclass, multilabel or a kind added since), with
        its labels."""
        several = task in TASK_TYPES and TASK_TYPES[task].takes(label_names, True)
        return cls.prepared(label_names, several)

    @classmethod
    def from_model_config(cls, config: Any) -> TaskInfo:
        """The task of a saved model: its config's `problem_type` and `id2label`."""
        labels = [config.id2label[index] for index in range(config.num_labels)]
        return cls.prepared(labels, config.problem_type == PROBLEM_TYPES[True])

    @classmethod
    def from_features(
        cls, features: Features, image_column: str, label_column: str
    ) -> TaskInfo | None:
        """The task of a dataset's ``label_column``: a `ClassLabel`, or a list of them
        (multi-label); None when the column holds neither."""
        feature = features.get(label_column)
        if isinstance(feature, ClassLabel):
            return cls(feature.names, False, image_column, label_column)
        if isinstance(feature, (List, Sequence)) and isinstance(feature.feature, ClassLabel):
            return cls(feature.feature.names, True, image_column, label_column)
        return None

    def same_labels(self, other: TaskInfo) -> bool:
        """Whether ``other`` predicts the same labels, in the same order, the same way (one
        per image, or several)."""
        return (self.label_names, self.multi_label) == (other.label_names, other.multi_label)

    def with_labels(self, label_names: list[str]) -> TaskInfo:
        """A task of the same kind (one label per image, or several) and columns, predicting
        ``label_names``: another dataset's labels mapped onto a model's."""
        return TaskInfo(list(label_names), self.multi_label, self.image_column, self.label_column)

    @property
    def identity(self) -> dict[str, Any]:
        """The labels and their kind, as a run's record of its data names them."""
        return {"labels": list(self.label_names), "multi_label": self.multi_label}

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPES[self.multi_label]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    @property
    def thresholded_labels(self) -> list[str]:
        """The labels that get a decision threshold (none: the top class decides)."""
        return []

    def describe(self) -> str:
        return f"{self.task}, {len(self.label_names)} labels"

    # labels ---------------------------------------------------------------------------------

    def encode(self, labels: list) -> np.ndarray:
        """A column of dataset labels as arrays: class indices, or multi-hot rows."""
        return np.asarray(labels)

    def target(self, value: int | list[int]) -> torch.Tensor:
        """One example's label as the loss takes it."""
        return torch.tensor(value, dtype=torch.long)

    def soft_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """A batch's labels as float rows that mixing can blend (one-hot or multi-hot)."""
        return functional.one_hot(labels, len(self.label_names)).float()

    def label_text(self, value: int | list[int]) -> str:
        return self.label_names[value]

    def loss_targets(self, labels: np.ndarray) -> torch.Tensor:
        """Encoded labels as the loss takes them beside float64 logits: class indices."""
        return torch.as_tensor(np.asarray(labels)).long()

    def feature_groups(self, labels: np.ndarray) -> np.ndarray:
        """The group each training image's features are centred on, for its distance to the
        training images (`medft.inference.ood`), from encoded labels: its class."""
        return np.asarray(labels)

    # datasets -------------------------------------------------------------------------------

    def label_feature(self) -> ClassLabel | List:
        """The label column's feature in a prepared dataset: a `ClassLabel`."""
        return ClassLabel(names=self.label_names)

    @property
    def label_format(self) -> str:
        """The label column and what it holds, for a dataset card."""
        return f"`{self.label_column}` (a class id)"

    def label_counts(self, values: list) -> dict[str, int]:
        """Images per class, from a label column's values."""
        counts = Counter(self.label_names[index] for index in values)
        return {name: counts[name] for name in self.label_names}

    def relabelled(self, values: list, onto: list[int | None]) -> list:
        """A label column's values with each class index ``i`` replaced by ``onto[i]``; None
        for an image whose class maps to None (a dropped label): it is left out."""
        return [onto[value] for value in values]

    dropped_labels: ClassVar[str] = "images of a dropped label are left out"

    def split_strata(self, labels: list) -> list | None:
        """What `medft prepare` carves splits in proportion to: each image's class."""
        return list(labels)

    def fold_strata(self, labels: list, folds: int) -> np.ndarray:
        """One stratum per image for cross-validation folds: its class."""
        return np.asarray(labels)

    # scores ---------------------------------------------------------------------------------

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """What `pipeline()` reports: a softmax over classes."""
        return softmax(np.asarray(logits, dtype=np.float64), axis=-1)

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        label_smoothing: float,
    ) -> torch.Tensor:
        """Cross-entropy (with class weights and smoothing; soft targets from mixing too)."""
        return functional.cross_entropy(
            logits, labels, weight=weights, label_smoothing=label_smoothing
        )

    def balanced_weights(self, encoded: np.ndarray) -> torch.Tensor:
        """scikit-learn's "balanced" class weights, n / (classes * count); 0 for a class never
        seen."""
        present = np.unique(encoded)
        weights = np.zeros(len(self.label_names))
        weights[present] = compute_class_weight("balanced", classes=present, y=encoded)
        return torch.tensor(weights, dtype=torch.float32)

    def sampling_weights(self, encoded: np.ndarray) -> torch.Tensor:
        """Per-image weights that make each class about equally likely to be drawn."""
        counts = np.bincount(encoded)
        return torch.tensor(1.0 / counts[encoded], dtype=torch.double)

    # metrics --------------------------------------------------------------------------------

    def metrics(
        self, probs: np.ndarray, labels: np.ndarray, cutoffs: np.ndarray | None = None
    ) -> dict[str, float]:
        """Accuracy, balanced accuracy and macro-F1 of the top class (what the Trainer logs)."""
        predicted = probs.argmax(axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (UndefinedMetricWarning, UserWarning))
            return {
                "accuracy": float(accuracy_score(labels, predicted)),
                "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
                "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
            }

    def headline_metrics(
        self, probs: np.ndarray, labels: np.ndarray, cutoffs: np.ndarray | None
    ) -> dict[str, float]:
        """The metrics that get confidence intervals (NaN where undefined on these images)."""
        return self.metrics(probs, labels, cutoffs)

    def weighted_metrics(
        self, probs: np.ndarray, labels: np.ndarray, cutoffs: np.ndarray | None
    ) -> WeightedMetrics:
        """`headline_metrics` of a bootstrap resample given as per-image weights (fast: the
        bootstrap calls it a thousand times)."""
        return single_label_metrics(probs, labels)

    def details(
        self, probs: np.ndarray, labels: np.ndarray, cutoffs: np.ndarray | None
    ) -> dict[str, Any]:
        """Weighted F1, top-k accuracy, per-class precision / recall / F1 / support, confusion."""
        classes = np.arange(len(self.label_names))
        predicted = probs.argmax(axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            precision, recall, f1, support = precision_recall_fscore_support(
                labels, predicted, labels=classes, zero_division=0
            )
            metrics = {
                "weighted_f1": float(
                    f1_score(labels, predicted, average="weighted", zero_division=0)
                )
            }
            for k in TOP_K:
                if k < len(classes):
                    metrics[f"top_{k}_accuracy"] = float(
                        top_k_accuracy_score(labels, probs, k=k, labels=classes)
                    )
        per_class = {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(self.label_names, precision, recall, f1, support)
        }
        matrix = confusion_matrix(labels, predicted, labels=classes).tolist()
        return {"metrics": metrics, "per_class": per_class, "confusion_matrix": matrix}

    def prevalence(self, labels: np.ndarray) -> dict[str, float]:
        """The share of images in each class."""
        counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(self.label_names))
        return {name: float(n / max(len(labels), 1)) for name, n in zip(self.label_names, counts)}

    # thresholds -----------------------------------------------------------------------------

    @property
    def default_threshold_method(self) -> str:
        return "youden"

    def threshold_targets(self, labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(column of the probabilities, its binary targets) per thresholded label."""
        return []

    def cutoffs(self, values: dict[str, float]) -> np.ndarray | None:
        """A thresholds mapping as the metrics take it: one value per thresholded label."""
        if not self.thresholded_labels:
            return None
        return np.array([values[name] for name in self.thresholded_labels])

    # figures --------------------------------------------------------------------------------

    def curve_panels(
        self,
        probs: np.ndarray,
        labels: np.ndarray,
        cut: dict[str, float],
        metrics: dict[str, Any],
        per_finding: dict[str, dict[str, Any]] | None = None,
    ) -> list[CurvePanel]:
        """What the ROC and PR figures draw, with the report's areas and thresholds: all classes
        one-vs-rest, micro-averaged."""
        one_hot = label_binarize(labels, classes=np.arange(len(self.label_names)))
        return [
            CurvePanel(f"{len(self.label_names)} classes, one-vs-rest (micro-average)",
                       one_hot.ravel(), probs.ravel(), None, metrics.get("micro_auroc"),
                       metrics.get("micro_auprc"))
        ]  # fmt: skip

    def calibration_scores(self, probs: np.ndarray, labels: np.ndarray) -> CalibrationScores:
        """The top class's probability; true when the top class is right."""
        right = probs.argmax(axis=-1) == np.asarray(labels)
        return CalibrationScores(
            probs.max(axis=-1),
            right,
            "top-class probability (true: the top class is right)",
            "confidence (top-class probability)",
            "accuracy",
        )

    # medft predict --------------------------------------------------------------------------

    def csv_header(self, top_k: int) -> list[str]:
        k = min(top_k, len(self.label_names))
        return [f"{what}_{i}" for i in range(1, k + 1) for what in ("label", "score")]

    def csv_cells(self, scores: np.ndarray, cut: dict[str, float], top_k: int) -> list[str]:
        order = np.argsort(-scores, kind="stable")[: min(top_k, len(self.label_names))]
        return [v for i in order for v in (self.label_names[i], f"{scores[i]:.6f}")]

    def counted(self, scores: np.ndarray, cut: dict[str, float]) -> list[str]:
        """What the `medft predict` summary counts for one image: its top label."""
        return [self.label_names[int(np.argmax(scores))]]

    counted_what: ClassVar[str] = "top-1 labels"

    # medft serve ----------------------------------------------------------------------------

    def shown(
        self, scores: np.ndarray, cut: dict[str, float], top_k: int
    ) -> tuple[str, list[str], list[list[str]]]:
        """What the web page shows for one image: a one-line verdict, and a table (columns,
        rows) of the top-k labels and their probabilities."""
        order = np.argsort(-scores, kind="stable")[: min(top_k, len(self.label_names))]
        rows = [[self.label_names[i], f"{scores[i]:.3f}"] for i in order]
        return f"Top label: {rows[0][0]}", ["label", "probability"], rows
