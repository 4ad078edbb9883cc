"""Medical-grade evaluation of one split's scores: metrics, thresholds, intervals, calibration.

`evaluate_scores` turns a split's probabilities (and the validation split's, to
tune thresholds on) into the content of `metrics.json`; `write_evaluation`
saves it with `thresholds.json` (which `medft predict` reads) and the plots.
The trainer calls both after training and `medft evaluate` calls them on a saved
model, so the model card and the command report the same numbers. Every metric
comes from scikit-learn (through `medft.metrics` where the Trainer uses it too).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from sklearn.preprocessing import label_binarize

from medft.bootstrap import CONFIDENCE, DEFAULT_RESAMPLES, Resampler, bootstrap_intervals
from medft.calibration import DEFAULT_BINS, reliability
from medft.config import THRESHOLD_METHODS
from medft.data.loading import TaskInfo, check_split, read_dataset, task_of
from medft.errors import MedftError
from medft.losses import label_array
from medft.metrics import (
    auprc_or_none,
    auroc_or_none,
    metrics_for,
    probabilities,
)
from medft.plots import (
    CONFUSION_NAME,
    PR_NAME,
    RELIABILITY_NAME,
    ROC_NAME,
    CurvePanel,
    plot_confusion_matrix,
    plot_pr_curves,
    plot_reliability,
    plot_roc_curves,
)
from medft.prediction import (
    ImageReader,
    load_classifier,
    saved_task,
    score_images,
    thresholds_for,
)
from medft.thresholds import (
    DEFAULT_THRESHOLD,
    THRESHOLDS_NAME,
    Thresholds,
    cutoffs,
    fixed_thresholds,
    save_thresholds,
    tune_thresholds,
)

METRICS_NAME = "metrics.json"
TOP_K = (3, 5)
HEADLINE = {
    "multiclass": ("accuracy", "balanced_accuracy", "macro_f1"),
    "binary": ("auroc", "auprc", "sensitivity", "specificity", "accuracy", "balanced_accuracy"),
    "multilabel": ("mean_auroc", "micro_auroc", "macro_f1", "micro_f1"),
}
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
    """One split's predicted probabilities, its true labels, and each image's patient if known."""

    probs: np.ndarray  # (images, labels): softmax, or a sigmoid per finding
    labels: np.ndarray  # class indices, or (images, labels) multi-hot
    patients: np.ndarray | None = None

    def subset(self, indices: np.ndarray) -> SplitScores:
        return SplitScores(self.probs[indices], self.labels[indices])


@dataclass
class EvaluationOptions:
    """How `evaluate_scores` tunes thresholds, bootstraps and bins."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    threshold_method: str = "auto"  # youden | f1; auto: youden for binary, f1 for multi-label
    threshold: float | None = None  # binary only: use this instead of tuning one
    bins: int = DEFAULT_BINS
    progress: bool = False

    def __post_init__(self) -> None:
        if self.threshold_method not in THRESHOLD_METHODS:
            raise MedftError(
                f"threshold method must be one of {', '.join(THRESHOLD_METHODS)}, "
                f"got '{self.threshold_method}'."
            )
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise MedftError(f"threshold must be a probability in [0, 1], got {self.threshold}.")
        if self.resamples < 0 or self.bins < 1:
            raise MedftError("bootstrap resamples must be >= 0 and calibration bins >= 1.")


# metrics --------------------------------------------------------------------------------------


def headline_metrics(
    task: TaskInfo, scores: SplitScores, thresholds: Thresholds | None
) -> dict[str, float]:
    """The metrics that get confidence intervals (NaN where undefined on these images)."""
    metrics = metrics_for(task, scores.probs, scores.labels, cutoffs(task, thresholds))
    if task.multi_label:
        micro = auroc_or_none(scores.labels.ravel(), scores.probs.ravel())
        metrics["micro_auroc"] = float("nan") if micro is None else micro
    elif task.task == "binary":
        auprc = auprc_or_none(scores.labels, scores.probs[:, 1])
        metrics["auroc"] = metrics.get("auroc", float("nan"))
        metrics["auprc"] = float("nan") if auprc is None else auprc
    return metrics


def single_label_details(task: TaskInfo, scores: SplitScores) -> dict[str, Any]:
    """Weighted F1, top-k accuracy, per-class precision / recall / F1 / support, confusion."""
    classes = np.arange(len(task.label_names))
    predicted = scores.probs.argmax(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            scores.labels, predicted, labels=classes, zero_division=0
        )
        metrics = {
            "weighted_f1": float(
                f1_score(scores.labels, predicted, average="weighted", zero_division=0)
            )
        }
        for k in TOP_K:
            if k < len(classes):
                metrics[f"top_{k}_accuracy"] = float(
                    top_k_accuracy_score(scores.labels, scores.probs, k=k, labels=classes)
                )
    if task.task == "multiclass":  # one-vs-rest, micro-averaged: the curves the plots draw
        one_hot = label_binarize(scores.labels, classes=classes).ravel()
        metrics["micro_auroc"] = auroc_or_none(one_hot, scores.probs.ravel())
        metrics["micro_auprc"] = auprc_or_none(one_hot, scores.probs.ravel())
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(task.label_names, precision, recall, f1, support)
    }
    matrix = confusion_matrix(scores.labels, predicted, labels=classes)
    return {"metrics": metrics, "per_class": per_class, "confusion_matrix": matrix.tolist()}


def per_finding_details(
    task: TaskInfo, scores: SplitScores, thresholds: Thresholds
) -> dict[str, dict[str, Any]]:
    """AUROC, AUPRC, the threshold, and sensitivity, specificity and F1 at it, per finding."""
    rows = {}
    for index, name in enumerate(task.label_names):
        target, score = scores.labels[:, index].astype(int), scores.probs[:, index]
        predicted = score >= thresholds.values[name]
        positives, negatives = int(target.sum()), int(len(target) - target.sum())
        hits = int(np.sum(predicted & (target == 1)))
        rejections = int(np.sum(~predicted & (target == 0)))
        rows[name] = {
            "auroc": auroc_or_none(target, score),
            "auprc": auprc_or_none(target, score),
            "threshold": thresholds.values[name],
            "sensitivity": hits / positives if positives else None,
            "specificity": rejections / negatives if negatives else None,
            "f1": float(f1_score(target, predicted, zero_division=0)),
            "positives": positives,
        }
    return rows


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


# the report -----------------------------------------------------------------------------------


def evaluate_scores(
    task: TaskInfo,
    scores: SplitScores,
    *,
    split: str,
    tuning: SplitScores | None = None,
    tuning_split: str = "validation",
    stored: Thresholds | None = None,
    options: EvaluationOptions | None = None,
) -> dict[str, Any]:
    """Everything `metrics.json` holds for ``scores`` (one split of a model's predictions).

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

    metrics = headline_metrics(task, scores, thresholds)
    resampler = Resampler(len(scores.labels), scores.patients)
    intervals = bootstrap_intervals(
        lambda indices: headline_metrics(task, scores.subset(indices), thresholds),
        resampler,
        resamples=options.resamples,
        seed=options.seed,
        progress=options.progress,
    )
    report: dict[str, Any] = {
        "split": split,
        "task": task.task,
        "labels": task.label_names,
        "images": int(len(scores.labels)),
        "patients": None if scores.patients is None else resampler.n_units,
        "metrics": {k: v for k, v in metrics.items() if not np.isnan(v)},
        "confidence_intervals": {
            name: interval.to_json() if interval else None for name, interval in intervals.items()
        },
        "bootstrap": {
            "resamples": options.resamples,
            "seed": options.seed,
            "confidence": CONFIDENCE,
            "unit": resampler.unit,
        },
        "thresholds": thresholds.to_json() if thresholds else None,
        "calibration": reliability(scores.probs, scores.labels, task.multi_label, options.bins)
        .to_json(),
    }  # fmt: skip
    if task.multi_label:
        report["per_finding"] = per_finding_details(task, scores, thresholds)
        comparison = chexnet_comparison(
            task.label_names, report["per_finding"], report["confidence_intervals"]
        )
        if comparison:
            report["chexnet_comparison"] = comparison
    else:
        details = single_label_details(task, scores)
        report["metrics"] |= {k: v for k, v in details.pop("metrics").items() if v is not None}
        report |= details
    return report


def headline(report: dict[str, Any]) -> list[tuple[str, float, dict | None]]:
    """(metric, value, its interval) for the task's headline metrics that are defined."""
    intervals = report["confidence_intervals"]
    return [
        (name, report["metrics"][name], intervals.get(name))
        for name in HEADLINE[report["task"]]
        if name in report["metrics"]
    ]


# files and summary ----------------------------------------------------------------------------


def curve_panels(task: TaskInfo, scores: SplitScores, report: dict[str, Any]) -> list[CurvePanel]:
    """What the ROC and PR figures draw: each finding, the positive class, or all classes
    one-vs-rest (micro-average), with the report's areas and thresholds."""
    cut = (report["thresholds"] or {}).get("values", {})
    metrics = report["metrics"]
    if task.multi_label:
        return [
            CurvePanel(name, scores.labels[:, index], scores.probs[:, index], cut[name],
                       report["per_finding"][name]["auroc"], report["per_finding"][name]["auprc"])
            for index, name in enumerate(task.label_names)
        ]  # fmt: skip
    if task.task == "binary":
        negative, positive = task.label_names
        return [
            CurvePanel(f"{positive} vs {negative}", (scores.labels == 1) * 1, scores.probs[:, 1],
                       cut[positive], metrics.get("auroc"), metrics.get("auprc"))
        ]  # fmt: skip
    one_hot = label_binarize(scores.labels, classes=np.arange(len(task.label_names)))
    return [
        CurvePanel(f"{len(task.label_names)} classes, one-vs-rest (micro-average)",
                   one_hot.ravel(), scores.probs.ravel(), None, metrics.get("micro_auroc"),
                   metrics.get("micro_auprc"))
    ]  # fmt: skip


def write_evaluation(
    report: dict[str, Any], task: TaskInfo, scores: SplitScores, output: str | Path
) -> list[Path]:
    """metrics.json, thresholds.json (binary and multi-label) and the PNG figures."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    if report["thresholds"]:
        thresholds = Thresholds(**report["thresholds"])
        written.append(save_thresholds(thresholds, task, output / THRESHOLDS_NAME))
    if not task.multi_label:
        matrix = np.asarray(report["confusion_matrix"])
        written.append(plot_confusion_matrix(matrix, task.label_names, output / CONFUSION_NAME))
    panels = curve_panels(task, scores, report)
    split = report["split"]
    written.append(plot_roc_curves(panels, output / ROC_NAME, f"ROC, {split} split"))
    written.append(plot_pr_curves(panels, output / PR_NAME, f"Precision-recall, {split} split"))
    bins = reliability(scores.probs, scores.labels, task.multi_label, report["calibration"]["bins"])
    written.append(plot_reliability(bins, output / RELIABILITY_NAME, task.multi_label))
    report["files"] = [path.name for path in written]
    metrics_path = output / METRICS_NAME
    metrics_path.write_text(json.dumps(report, indent=2) + "\n")
    return [metrics_path, *written]


def interval_text(interval: dict | None) -> str:
    return f"{interval['low']:.4f} - {interval['high']:.4f}" if interval else "-"


def format_evaluation(report: dict[str, Any], output: str | Path | None = None) -> str:
    """One screen: headline metrics with intervals, thresholds, calibration, the weakest
    classes or the per-finding table (with CheXNet's for NIH models), and the files."""
    boot = report["bootstrap"]
    patients = f", {report['patients']} patients" if report["patients"] else ""
    lines = [
        f"Evaluation on the {report['split']} split: {report['images']} images{patients}; "
        f"{report['task']}, {len(report['labels'])} labels.",
        "",
        f"  {'metric':<20} {'value':>7}   95% CI ({boot['resamples']} {boot['unit']} resamples)",
    ]
    for name, value, interval in headline(report):
        lines.append(f"  {name:<20} {value:>7.4f}   {interval_text(interval)}")
    extra = [k for k in report["metrics"] if k.startswith("top_") or k == "weighted_f1"]
    lines += [f"  {name:<20} {report['metrics'][name]:>7.4f}" for name in extra]
    thresholds = report["thresholds"]
    if thresholds and report["task"] == "binary":
        ((positive, value),) = thresholds["values"].items()
        source = f"tuned on {thresholds['tuned_on']}" if thresholds["tuned_on"] else "fixed"
        lines.append(
            f"  sensitivity and specificity call '{positive}' at probability >= {value:.4f} "
            f"({thresholds['method']}, {source})"
        )
    calibration = report["calibration"]
    lines.append(f"  ECE {calibration['ece']:.4f} ({calibration['bins']} bins; "
                 f"{calibration['scored']})")  # fmt: skip
    if "per_class" in report and len(report["labels"]) > 2:
        weakest = sorted(report["per_class"].items(), key=lambda item: item[1]["f1"])[:5]
        lines += ["", "  lowest F1: " + ", ".join(f"{n} {r['f1']:.2f}" for n, r in weakest)]
    if "per_finding" in report:
        lines += finding_table(report)
    if report.get("unreadable"):
        lines += ["", f"unreadable: {len(report['unreadable'])} image(s) left out (listed in "
                  f"{METRICS_NAME} with the reason)"]  # fmt: skip
    if output is not None:
        lines += ["", f"Wrote {', '.join(report.get('files', []))} and {METRICS_NAME} to {output}"]
    return "\n".join(lines)


def chexnet_aurocs(report: dict[str, Any]) -> dict[str, float]:
    """CheXNet's published AUROC per finding, when the report compares with it (NIH models)."""
    rows = report.get("chexnet_comparison", {}).get("rows", [])
    return {row["finding"]: row["chexnet_auroc"] for row in rows}


def finding_table(report: dict[str, Any]) -> list[str]:
    """Per-finding AUROC (with CI), threshold and F1; CheXNet's AUROC beside it when shown."""
    chexnet = chexnet_aurocs(report)
    intervals = report["confidence_intervals"]
    thresholds = report["thresholds"]
    lines = [
        "",
        f"  {'finding':<20} {'AUROC':>6}  {'95% CI':<15}  {'thr':>5}  {'F1':>5}"
        + ("  CheXNet*" if chexnet else ""),
    ]
    for name, row in report["per_finding"].items():
        auroc = "-" if row["auroc"] is None else f"{row['auroc']:.3f}"
        interval = intervals.get(f"auroc_{name}")
        ci = f"{interval['low']:.3f}-{interval['high']:.3f}" if interval else "-"
        line = f"  {name:<20} {auroc:>6}  {ci:<15}  {row['threshold']:>5.3f}  {row['f1']:>5.3f}"
        lines.append(line + (f"  {chexnet[name]:.3f}" if chexnet else ""))
    lines.append(
        f"  thresholds: {thresholds['method']}, tuned on {thresholds['tuned_on'] or '-'}"
        + (
            f"; left at 0.5: {', '.join(thresholds['defaulted'])}"
            if thresholds["defaulted"]
            else ""
        )
    )
    if chexnet:
        lines.append(f"  * {CHEXNET_NOTE}")
    return lines


# a split's scores, from the Trainer or from a saved model -------------------------------------


def patient_ids(dataset: Dataset) -> np.ndarray | None:
    """The split's `patient_id` column (read past any transform), or None if it has none."""
    if "patient_id" not in dataset.column_names:
        return None
    return np.asarray(list(dataset.with_format(None)["patient_id"]))


def scores_from_logits(
    task: TaskInfo, logits: np.ndarray, labels: np.ndarray, dataset: Dataset
) -> SplitScores:
    """A split's scores from the Trainer's predictions on it (same order as ``dataset``)."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return SplitScores(probabilities(logits, task.multi_label), labels, patient_ids(dataset))


def score_split(
    classifier: Any, dataset: Dataset, task: TaskInfo, batch_size: int, num_workers: int
) -> tuple[SplitScores, dict[str, str]]:
    """A saved model's scores on one split; images that cannot be read are left out and
    returned as {image: reason}."""
    reader = ImageReader(classifier.processor, splits=[dataset], image_column=task.image_column)
    probs, errors = score_images(classifier, reader, batch_size=batch_size, num_workers=num_workers)
    keep = np.array([row not in errors for row in range(len(dataset))], dtype=bool)
    labels = label_array(task, list(dataset[task.label_column]))
    patients = patient_ids(dataset)
    ids = list(dataset["image_id"]) if "image_id" in dataset.column_names else None
    unreadable = {str(ids[row] if ids else row): reason for row, reason in errors.items()}
    scores = SplitScores(probs[keep], labels[keep], None if patients is None else patients[keep])
    return scores, unreadable


def evaluate_model(
    model: str | Path,
    dataset_name: str,
    *,
    split: str = "test",
    tuning_split: str = "validation",
    output: str | Path | None = None,
    options: EvaluationOptions | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
) -> tuple[dict[str, Any], list[Path]]:
    """`medft evaluate`: score ``split`` with a saved model, tune thresholds on
    ``tuning_split``, and write metrics.json, thresholds.json and the plots to ``output``
    (default: the model folder, where `medft predict` finds the thresholds)."""
    predicted = saved_task(model)
    dataset = read_dataset(dataset_name)
    check_split(dataset, split, dataset_name)
    task = task_of(dataset, split, "image", None)
    if (task.label_names, task.multi_label) != (predicted.label_names, predicted.multi_label):
        raise MedftError(
            f"the model in {model} predicts {predicted.task} labels "
            f"{', '.join(predicted.label_names)}, but {dataset_name} has {task.task} "
            f"labels {', '.join(task.label_names)}; evaluate it on the data it was trained for."
        )
    classifier = load_classifier(model)
    scores, unreadable = score_split(classifier, dataset[split], task, batch_size, num_workers)
    options = options or EvaluationOptions()
    tuning, stored = None, None
    needs_thresholds = task.task != "multiclass" and options.threshold is None
    if needs_thresholds and tuning_split == split:
        tuning = scores
    elif needs_thresholds and tuning_split in dataset:
        tuning, _ = score_split(classifier, dataset[tuning_split], task, batch_size, num_workers)
    elif needs_thresholds:
        stored = thresholds_for(classifier, None)
    report = evaluate_scores(
        task,
        scores,
        split=split,
        tuning=tuning,
        tuning_split=tuning_split,
        stored=stored,
        options=options,
    )
    report = {"model": str(model), "dataset": dataset_name, **report, "unreadable": unreadable}
    return report, write_evaluation(report, task, scores, output or model)
