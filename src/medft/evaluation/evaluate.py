"""Medical-grade evaluation of one split's scores: metrics, thresholds, intervals, calibration.

`evaluate_scores` turns a split's probabilities (and the validation split's, to
tune thresholds on) into an `EvaluationReport`, the content of `metrics.json`.
The trainer calls it after training and `medft evaluate` on a saved model
(`medft.evaluation.saved_models`), so the model card and the command report the same
numbers. This module only computes; `medft.evaluation.reporting` writes the files and the
text, and `medft.evaluation.card` the model card. Every metric comes from scikit-learn,
through the task (`medft.tasks`), which the Trainer's metrics use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from medft.config import EvaluationOptions
from medft.data.patients import patient_groups
from medft.errors import MedftError
from medft.evaluation.bootstrap import CONFIDENCE, Resampler, bootstrap_intervals
from medft.evaluation.calibration import Reliability, TemperatureScaling, reliability
from medft.evaluation.subgroups import AttributeResult, attribute_values, evaluate_subgroups
from medft.evaluation.thresholds import Thresholds, cutoffs, fixed_thresholds, tune_thresholds
from medft.formats.prepared_report import read_report
from medft.tasks import DEFAULT_THRESHOLD, TASK_TYPES, TaskInfo

METRICS_NAME = "metrics.json"
# Rajpurkar et al. 2017 (arXiv:1711.05225), Table 2, CheXNet column.
CHEXNET_AUROC = {
    "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345,
    "Mass": 0.8676, "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887,
    "Consolidation": 0.7901, "Edema": 0.8878, "Emphysema": 0.9371, "Fibrosis": 0.8047,
    "Pleural_Thickening": 0.8062, "Hernia": 0.9164,
}  # fmt: skip
CHEXNET_NOTE = (
    "CheXNet's AUROCs (Rajpurkar et al. 2017, arXiv:1711.05225) come from a random 70/10/20 "
    "patient split of ChestX-ray14, not from this test split: a different split, so the columns "
    "are not a like-for-like comparison."
)


@dataclass
class SplitScores:
    """One split's predicted probabilities, its true labels, each image's patient if known, and
    its value of each attribute the evaluation reports performance by (sex, age band...)."""

    probs: np.ndarray  # (images, labels): softmax, or a sigmoid per finding
    labels: np.ndarray  # class indices, or (images, labels) multi-hot
    patients: np.ndarray | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> a value per image

    def subset(self, indices: np.ndarray) -> SplitScores:
        return SplitScores(
            self.probs[indices],
            self.labels[indices],
            None if self.patients is None else self.patients[indices],
            {name: values[indices] for name, values in self.attributes.items()},
        )


@dataclass
class EvaluationReport:
    """Everything one evaluation found; `to_json` is metrics.json, `from_json` reads it back."""

    split: str
    task: str  # binary | multiclass | multilabel
    labels: list[str]
    images: int
    patients: int | None
    metrics: dict[str, float]
    confidence_intervals: dict[str, dict[str, float] | None]
    bootstrap: dict[str, Any]  # resamples, seed, confidence, unit (image or patient)
    thresholds: Thresholds | None
    calibration: Reliability
    per_class: dict[str, dict[str, float]] | None = None  # single-label
    confusion_matrix: list[list[int]] | None = None  # single-label
    per_finding: dict[str, dict[str, Any]] | None = None  # multi-label
    chexnet_comparison: dict[str, Any] | None = None  # models of the 14 NIH findings
    model: str | None = None  # names, not paths (`medft.public_names`): metrics.json is pushed
    dataset: str | None = None
    unreadable: dict[str, str] | None = None  # image -> reason (saved models only)
    temperature: TemperatureScaling | None = None  # when the scores were calibrated
    tta: list[str] | None = None  # the test-time views averaged, when there were several
    members: list[str] | None = None  # the models of an ensemble, when there were several
    subgroups: list[AttributeResult] | None = None  # performance by sex, age band, view...
    label_map: dict[str, Any] | None = None  # another dataset's labels read as the model's
    against_own_test: dict[str, Any] | None = None  # `medft.evaluation.external`
    ood: dict[str, Any] | None = None  # images flagged out of distribution (`medft.inference.ood`)
    files: list[str] = field(default_factory=list)  # written beside metrics.json
    conformal: dict[str, Any] | None = None  # the prediction sets' coverage (conformal.py)
    warnings: list[str] | None = None  # e.g. the split is a sample the model was fitted on

    OPTIONAL = (
        "per_class", "confusion_matrix", "per_finding", "chexnet_comparison", "conformal",
        "warnings",
    )  # fmt: skip

    @property
    def task_info(self) -> TaskInfo:
        return TaskInfo.from_name(self.task, self.labels)

    def headline(self) -> list[tuple[str, float, dict | None]]:
        """(metric, value, its interval) for the task's headline metrics that are defined."""
        return [
            (name, self.metrics[name], self.confidence_intervals.get(name))
            for name in TASK_TYPES[self.task].headline
            if name in self.metrics
        ]

    def to_json(self) -> dict[str, Any]:
        content: dict[str, Any] = {"model": self.model, "dataset": self.dataset}
        content = {key: value for key, value in content.items() if value is not None}
        content |= {
            "split": self.split,
            "task": self.task,
            "labels": self.labels,
            "images": self.images,
            "patients": self.patients,
            "metrics": self.metrics,
            "confidence_intervals": self.confidence_intervals,
            "bootstrap": self.bootstrap,
            "thresholds": self.thresholds.to_json() if self.thresholds else None,
            "calibration": self.calibration.to_json(),
        }
        for key in self.OPTIONAL:
            if getattr(self, key) is not None:
                content[key] = getattr(self, key)
        if self.unreadable is not None:
            content["unreadable"] = self.unreadable
        if self.temperature is not None:
            content["temperature"] = self.temperature.to_json()
        for key in ("tta", "members", "label_map", "against_own_test", "ood"):
            if getattr(self, key) is not None:
                content[key] = getattr(self, key)
        if self.subgroups is not None:
            content["subgroups"] = [attribute.to_json() for attribute in self.subgroups]
        if self.files:
            content["files"] = self.files
        return content

    @classmethod
    def from_json(cls, content: dict[str, Any]) -> EvaluationReport:
        values = dict(content)
        values["thresholds"] = Thresholds(**values["thresholds"]) if values["thresholds"] else None
        values["calibration"] = Reliability.from_json(values["calibration"])
        if values.get("temperature"):
            values["temperature"] = TemperatureScaling.from_json(values["temperature"])
        if values.get("subgroups") is not None:
            values["subgroups"] = [AttributeResult.from_json(a) for a in values["subgroups"]]
        return cls(**values)


def chexnet_comparison(
    label_names: list[str], per_finding: dict[str, dict[str, Any]], intervals: dict[str, Any]
) -> dict[str, Any] | None:
    """Our per-finding AUROC beside CheXNet's published one, for models of the 14 NIH findings."""
    if sorted(label_names) != sorted(CHEXNET_AUROC):
        return None
    rows = []
    for name in label_names:
        interval = intervals.get(f"auroc_{name}") or {}
        rows.append(
            {
                "finding": name,
                "auroc": per_finding[name]["auroc"],
                "ci_low": interval.get("low"),
                "ci_high": interval.get("high"),
                "chexnet_auroc": CHEXNET_AUROC[name],
            }
        )
    ours = [row["auroc"] for row in rows if row["auroc"] is not None]
    return {
        "note": CHEXNET_NOTE,
        "rows": rows,
        "mean_auroc": float(np.mean(ours)) if ours else None,
        "chexnet_mean_auroc": float(np.mean(list(CHEXNET_AUROC.values()))),
    }


def evaluate_scores(
    task: TaskInfo,
    scores: SplitScores,
    *,
    split: str,
    tuning: SplitScores | None = None,
    tuning_split: str = "validation",
    stored: Thresholds | None = None,
    options: EvaluationOptions | None = None,
) -> EvaluationReport:
    """The report for ``scores`` (one split of a model's predictions), with performance by
    each attribute the scores carry.

    Thresholds come from ``options.threshold`` (binary), else are tuned on
    ``tuning`` (the validation split), else are the ``stored`` ones, else 0.5.
    """
    options = options or EvaluationOptions()
    if options.threshold is not None:
        thresholds = fixed_thresholds(task, options.threshold, "given")
    elif tuning is not None:
        thresholds = tune_thresholds(
            task, tuning.probs, tuning.labels, options.threshold_method, tuning_split
        )
    else:
        thresholds = stored or fixed_thresholds(task, DEFAULT_THRESHOLD, "default")
    cut = cutoffs(task, thresholds)

    metrics = task.headline_metrics(scores.probs, scores.labels, cut)
    resampler = Resampler(len(scores.labels), scores.patients)
    weighted = task.weighted_metrics(scores.probs, scores.labels, cut)
    intervals = bootstrap_intervals(
        lambda drawn: weighted(np.bincount(drawn, minlength=len(scores.labels)).astype(float)),
        resampler,
        resamples=options.bootstrap_resamples,
        seed=options.seed,
        progress=options.progress,
    )
    details = task.details(scores.probs, scores.labels, cut)
    metrics = {k: v for k, v in metrics.items() if not np.isnan(v)}
    metrics |= {k: v for k, v in details.pop("metrics").items() if v is not None}
    report = EvaluationReport(
        split=split,
        task=task.task,
        labels=task.label_names,
        images=int(len(scores.labels)),
        patients=None if scores.patients is None else resampler.n_units,
        metrics=metrics,
        confidence_intervals={
            name: interval.to_json() if interval else None for name, interval in intervals.items()
        },
        bootstrap={
            "resamples": options.bootstrap_resamples,
            "seed": options.seed,
            "confidence": CONFIDENCE,
            "unit": resampler.unit,
        },
        thresholds=thresholds,
        calibration=reliability(scores.probs, scores.labels, task, options.calibration_bins),
        **details,
    )
    if report.per_finding is not None:
        report.chexnet_comparison = chexnet_comparison(
            task.label_names, report.per_finding, report.confidence_intervals
        )
    if scores.attributes:
        report.subgroups = evaluate_subgroups(
            task,
            scores.probs,
            scores.labels,
            scores.patients,
            scores.attributes,
            cut,
            resamples=options.bootstrap_resamples,
            seed=options.seed,
            progress=options.progress,
        )
    return report


# the attributes a split is evaluated by -------------------------------------------------------


def declared_attributes(dataset_name: str) -> list[str]:
    """The subgroup attributes `medft prepare` declared for a dataset it prepared
    (prepare_report.json's subgroup_columns); none for other datasets and Hub ids."""
    folder = Path(dataset_name).expanduser()
    report = read_report(folder) if folder.is_dir() else None
    return list((report or {}).get("subgroup_columns") or [])


def split_columns(
    dataset: Dataset, names: Sequence[str], where: str, key: str
) -> dict[str, np.ndarray]:
    """Each named column of a split (``where``, in words), a value per image; a name the split
    lacks is a one-line error naming the option or recipe ``key`` and the split's columns."""
    missing = [name for name in names if name not in dataset.column_names]
    if missing:
        raise MedftError(
            f"{key}: {where} has no column {missing[0]!r} (its columns: "
            f"{', '.join(dataset.column_names)}); name columns it has, or {key} none."
        )
    table = dataset.with_format(None)
    return {name: np.array(table[name], dtype=object) for name in names}


def subgroup_attributes(
    requested: Sequence[str] | None, dataset_name: str, dataset: Dataset, split: str, key: str
) -> dict[str, np.ndarray]:
    """Each image's value of the attributes to report performance by: ``requested``, else the
    dataset's declared ones; checked here, so that a mistake stops a run before it scores."""
    names = declared_attributes(dataset_name) if requested is None else requested
    columns = split_columns(dataset, names, f"the {split} split of {dataset_name}", key)
    return {name: attribute_values(values, name, len(dataset)) for name, values in columns.items()}


# a split's scores, from the Trainer or from a saved model -------------------------------------


def scores_from_logits(
    task: TaskInfo,
    logits: np.ndarray,
    labels: np.ndarray,
    dataset: Dataset,
    attributes: dict[str, np.ndarray] | None = None,
) -> SplitScores:
    """A split's scores from the Trainer's predictions on it (same order as ``dataset``), with
    its images' ``attributes`` (`subgroup_attributes`)."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    patients = patient_groups(dataset, task.image_column)
    return SplitScores(task.probabilities(logits), labels, patients, attributes or {})
