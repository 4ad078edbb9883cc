"""The model card README.md of a trained model: what it is, its data, the evaluation's
numbers (rendered from the `EvaluationReport`, as `medft evaluate` prints them), how it was
trained, how to use it, and what not to use it for. It names the model and the dataset
(`medft.public_names`), never their local paths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from medft.config import DataArguments, MedftTrainingArguments, ModelArguments
from medft.evaluation import CHEXNET_NOTE, EvaluationReport
from medft.plots import (
    CONFUSION_NAME,
    CURVES_NAME,
    PR_NAME,
    RELIABILITY_NAME,
    ROC_NAME,
    UNCALIBRATED_NAME,
    subgroups_name,
)
from medft.public_names import dataset_name, model_name
from medft.reporting import (
    chexnet_aurocs,
    finding_rows,
    interval_text,
    positive_threshold,
    signed,
    temperature_text,
)
from medft.subgroups import MIN_IMAGES, MIN_POSITIVES, AttributeResult, GroupResult, sensitivity_key
from medft.tasks import TASK_TYPES, TaskInfo

NOT_FOR_CLINICAL_USE = (
    "> **Not for clinical use.** This model is a research artefact. It is not a medical "
    "device, has not been validated prospectively, and must not be used to diagnose, "
    "triage or treat patients."
)
INTENDED_USE = "## Intended use and limitations"  # the section `medft serve` shows
SUBGROUPS_HEADING = "## Performance by subgroup"
HYPERPARAMETERS = (
    "learning_rate", "num_train_epochs", "per_device_train_batch_size",
    "gradient_accumulation_steps", "optim", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "fp16", "bf16", "seed",
)  # fmt: skip
TECHNIQUES = {
    ModelArguments: (
        "freeze", "unfreeze_last_n", "gradual_unfreeze_epochs", "head_dropout",
        "head_hidden_sizes", "drop_path_rate", "lora_r", "lora_alpha", "lora_dropout",
        "lora_target_modules", "image_size",
    ),
    DataArguments: (
        "crop_scale", "crop_ratio", "horizontal_flip", "vertical_flip", "rotation_degrees", "zoom",
        "brightness", "contrast", "auto_augment", "randaugment_magnitude", "random_erasing",
        "mixup_alpha", "cutmix_alpha", "mix_probability",
    ),
    MedftTrainingArguments: (
        "layer_decay", "lr_decay_rate", "lr_decay_steps", "lr_decay_staircase",
        "class_weighting", "sampler", "early_stopping_patience", "label_smoothing_factor",
        "ema_decay", "calibration",
    ),
}  # fmt: skip


def default_of(cls: type, key: str) -> Any:
    item = next(f for f in dataclasses.fields(cls) if f.name == key)
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return item.default


def card_settings(
    model_args: ModelArguments, data_args: DataArguments, args: MedftTrainingArguments
) -> dict[str, Any]:
    """The core hyper-parameters, plus every technique set to something other than its default."""
    settings = {key: getattr(args, key) for key in HYPERPARAMETERS}
    for values in (model_args, data_args, args):
        for key in TECHNIQUES[type(values)]:
            if getattr(values, key) != default_of(type(values), key):
                settings[key] = getattr(values, key)
    return settings


@dataclass
class CardFacts:
    """What the model card says about one training run."""

    model_name_or_path: str  # as the recipe gives it: the card shows only its name
    base_model: str | None  # the Hub id of the pretrained weights; None for random or local
    dataset_name: str  # as the recipe gives it: the card shows only its name
    task: TaskInfo
    split_sizes: dict[str, int]
    hyperparameters: dict[str, Any]
    test_metrics: dict[str, float] = field(default_factory=dict)
    validation_metrics: dict[str, float] = field(default_factory=dict)
    evaluation: EvaluationReport | None = None  # of the test (else validation) split
    image_size: tuple[int, int] | None = None
    repo_id: str | None = None
    extra_tags: list[str] = field(default_factory=list)
    weights_origin: str | None = None  # local weights, in words (a Hub base_model names itself)
    saved_weights: str | None = None  # which weights were saved, when there was a choice (EMA)


def hub_id(name: str) -> str | None:
    """A Hub id worth linking as base_model / dataset, or None for local paths and model types."""
    if Path(name).expanduser().exists() or "/" not in name or name.startswith(("/", ".")):
        return None
    return name


def metrics_table(metrics: dict[str, float], prefix: str) -> str:
    rows = [
        f"| {key.removeprefix(prefix + '_').replace('_', ' ')} | {value:.4f} |"
        for key, value in metrics.items()
        if key.startswith(prefix + "_") and isinstance(value, float)
        and not key.endswith(("runtime", "per_second", "loss"))
    ]  # fmt: skip
    return "\n".join(["| metric | value |", "|---|---|", *rows]) if rows else "(not evaluated)"


# Hub metric ids (and configurations) of the headline metrics, for the card's model-index.
HUB_METRICS = {
    "accuracy": ("accuracy", None), "balanced_accuracy": ("balanced_accuracy", None),
    "macro_f1": ("f1", "macro"), "micro_f1": ("f1", "micro"), "auroc": ("roc_auc", None),
    "mean_auroc": ("roc_auc", "macro"), "micro_auroc": ("roc_auc", "micro"),
    "auprc": ("average_precision", None), "sensitivity": ("recall", None),
    "specificity": ("specificity", None),
}  # fmt: skip


def eval_results(report: EvaluationReport | None, dataset: str) -> list[EvalResult] | None:
    """The evaluation's headline metrics as the Hub's model-index entries; ``dataset``: a Hub id
    or a local dataset's name."""
    if not report:
        return None
    results = []
    for name, value, interval in report.headline():
        metric_type, config = HUB_METRICS[name]
        ci = f" (95% CI {interval['low']:.4f}-{interval['high']:.4f})" if interval else ""
        results.append(
            EvalResult(
                task_type="image-classification",
                dataset_type=dataset,
                dataset_name=dataset.split("/")[-1],
                dataset_split=report.split,
                metric_type=metric_type,
                metric_config=config,
                metric_value=round(value, 4),
                metric_name=f"{name.replace('_', ' ')}{ci}",
            )
        )
    return results


def replace_results(card_text: str, report: EvaluationReport) -> str:
    """A model card with its results section (and performance by subgroup) and model-index
    replaced by ``report``'s (after `medft calibrate` changed the model)."""
    card = ModelCard(card_text)
    card.data.eval_results = eval_results(report, dataset_name(report.dataset or "dataset"))
    start = card.text.index("## Results on the ")
    end = card.text.index("\n## ", start + 1)
    if card.text.startswith(SUBGROUPS_HEADING, end + 1):
        end = card.text.index("\n## ", end + 1)
    card.text = card.text[:start] + "\n\n".join(evaluation_section(report)) + card.text[end:]
    return str(card)


def value_cell(value: float | None, interval: dict | None, gap: float | None = None,
               gap_interval: dict | None = None) -> str:  # fmt: skip
    """A metric with its 95% CI, and below it the gap to the rest with its CI."""
    if value is None:
        return "-"
    cell = f"{value:.3f} ({interval_text(interval, 3, '-')})"
    if gap is not None:
        cell += f"<br>gap {signed(gap)} ({interval_text(gap_interval, 3, ' to ')})"
    return cell


def group_rows(attribute: AttributeResult, metrics: list[str], labels: list[str]) -> list[str]:
    """The attribute's table: each group's size, positives (of a single thresholded label),
    and each headline metric with its CI and its gap to the rest; † marks groups too small."""
    columns = ["group", "images", "patients"] + [f"positives ({label})" for label in labels]
    columns += [metric.replace("_", " ") for metric in metrics]

    def row(group: GroupResult) -> list[str]:
        cells = [group.value + " †" * group.too_small, str(group.images),
                 "-" if group.patients is None else str(group.patients)]  # fmt: skip
        cells += [str(group.positives[label]) for label in labels]
        return cells + [
            value_cell(
                group.metrics.get(m),
                group.intervals.get(m),
                group.gaps.get(m),
                group.gap_intervals.get(m),
            )
            for m in metrics
        ]

    return [
        "| " + " | ".join(columns) + " |",
        "|---" * len(columns) + "|",
        *("| " + " | ".join(row(group)) + " |" for group in attribute.groups),
    ]


def label_rows(attribute: AttributeResult, labels: list[str]) -> list[str]:
    """Per thresholded label: each group's positives and sensitivity (with its CI) at the
    threshold, and the group with the lowest sensitivity."""
    groups = attribute.groups
    columns = ["label", *(group.value + " †" * group.too_small for group in groups), "lowest"]
    rows = []
    for label in labels:
        key, worst = sensitivity_key(label), attribute.worst_sensitivity.get(label)
        cells = [label]
        for group in groups:
            sensitivity = group.metrics.get(key)
            shown = "-" if sensitivity is None else value_cell(sensitivity, group.intervals[key])
            few = " ‡" * (label in group.few_positives)
            cells.append(f"{group.positives[label]}{few} · {shown}")
        cells.append(f"{worst['group']} {worst['sensitivity']:.3f}" if worst else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|", *rows]


def subgroup_section(report: EvaluationReport) -> list[str]:
    """Performance by subgroup: per attribute the groups' table, the sensitivities at the
    thresholds (the lowest group's), why small groups say little, and the forest plot."""
    boot, labels = report.bootstrap, list(report.thresholds.values) if report.thresholds else []
    metrics = list(TASK_TYPES[report.task].headline)
    lines = [
        SUBGROUPS_HEADING,
        f"Each group of the {report.split} split against the rest of it. Values with 95% "
        f"percentile bootstrap intervals over {boot['resamples']} resamples of {boot['unit']}s "
        "(the draws of the intervals above); the gap is the group's value minus the rest's, "
        "scored on the same draws. Sensitivity is at the thresholds above. † marks a group too "
        f"small to judge (fewer than {MIN_IMAGES} images, or fewer than {MIN_POSITIVES} "
        "positives of every thresholded label): shown, not to be relied on.",
    ]
    for attribute in report.subgroups or []:
        lines += [f"### {attribute.attribute}", "\n".join(
            group_rows(attribute, metrics, labels if len(labels) == 1 else [])
        )]  # fmt: skip
        if len(labels) > 1:
            lines.append(
                "Positives · sensitivity (95% CI) per label, at its threshold; ‡ fewer than "
                f"{MIN_POSITIVES} positives, left out of the lowest:\n\n"
                + "\n".join(label_rows(attribute, labels))
            )
        else:
            lines += [f"Lowest sensitivity: {lowest}" for lowest in lowest_lines(attribute)]
        notes = [
            f"{'† ' * group.too_small}{group.value}: {group.caveat()}."
            for group in attribute.groups
            if group.too_small or (group.caveat() and not set(metrics) <= set(group.metrics))
        ]  # the groups marked, and those with a metric left out (a class absent)
        lines += [" ".join(notes)] if notes else []
        name = subgroups_name(attribute.attribute)
        if name in report.files:
            lines.append(f"![By {attribute.attribute}]({name})")
    return lines


def lowest_lines(attribute: AttributeResult) -> list[str]:
    return [
        f"`{label}` in {worst['group']}, {worst['sensitivity']:.3f} "
        f"(95% CI {interval_text(worst['interval'], 3, '-')})."
        for label, worst in attribute.worst_sensitivity.items()
    ]


def evaluation_section(report: EvaluationReport) -> list[str]:
    """The card's results: headline metrics with intervals, thresholds, calibration, findings,
    the evaluation's figures, and performance by subgroup (the same numbers `medft evaluate`
    writes to metrics.json)."""
    boot = report.bootstrap
    patients = f" of {report.patients} patients" if report.patients else ""
    rows = [
        f"| {name.replace('_', ' ')} | {value:.4f} | {interval_text(interval)} |"
        for name, value, interval in report.headline()
    ]
    lines = [
        f"## Results on the {report.split} split",
        f"{report.images:,} images{patients}, evaluated as `medft evaluate` does. "
        f"Intervals: 95% percentile bootstrap over {boot['resamples']} resamples of "
        f"{boot['unit']}s (seed {boot['seed']}).",
        "\n".join(["| metric | value | 95% CI |", "|---|---|---|", *rows]),
    ]
    thresholds = report.thresholds
    if thresholds:
        how = thresholds.method + (
            f", tuned on the {thresholds.tuned_on} split" if thresholds.tuned_on else ""
        )
    positive = positive_threshold(report)
    if positive:
        lines.append(
            f"Sensitivity and specificity call `{positive[0]}` when its score is at least "
            f"{positive[1]:.4f} ({how}); `thresholds.json` holds it for `medft predict`."
        )
    if report.per_finding is not None:
        table = finding_rows(report, digits=4)
        columns = ["finding", "AUROC", "95% CI", "threshold", "F1", *(
            ["CheXNet AUROC*"] if "CheXNet*" in table[0] else []
        )]  # fmt: skip
        lines.append("\n".join([
            "| " + " | ".join(columns) + " |",
            "|---" * len(columns) + "|",
            *("| " + " | ".join(row.values()) + " |" for row in table),
        ]))  # fmt: skip
        lines.append(
            f"Per-finding thresholds: {how} (`thresholds.json`, applied by `medft predict`)."
            + (f" \\* {CHEXNET_NOTE}" if chexnet_aurocs(report) else "")
        )
    calibration = report.calibration
    lines.append(
        f"Calibration: expected calibration error {calibration.ece:.4f} "
        f"({len(calibration.counts)} equal-width bins of the {calibration.scored})."
    )
    if report.temperature is not None:
        lines.append(
            f"The probabilities are calibrated: {temperature_text(report.temperature)}. The "
            "temperature is folded into the classifier's weights, so plain `pipeline()` returns "
            "the calibrated probabilities."
        )
    figures = {
        CONFUSION_NAME: "Confusion matrix",
        ROC_NAME: "ROC curves",
        PR_NAME: "Precision-recall curves",
        RELIABILITY_NAME: "Reliability diagram",
        UNCALIBRATED_NAME: "Reliability diagram before calibration",
    }
    shown = [f"![{title}]({name})" for name, title in figures.items() if name in report.files]
    lines += [" ".join(shown)] if shown else []
    return lines + (subgroup_section(report) if report.subgroups else [])


def model_card(facts: CardFacts) -> ModelCard:
    base = facts.base_model
    dataset, model = dataset_name(facts.dataset_name), model_name(facts.model_name_or_path)
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["medft", "medical", "image-classification", facts.task.task, *facts.extra_tags],
        base_model=base,
        datasets=[hub_id(facts.dataset_name)] if hub_id(facts.dataset_name) else None,
        metrics=["accuracy", "f1", "roc_auc"],
        model_name=facts.repo_id or model,
        eval_results=eval_results(facts.evaluation, dataset),
    )
    origin = facts.weights_origin or (base and f"[`{base}`](https://huggingface.co/{base})")
    start = f"fine-tuned from {origin}" if origin else (
        f"trained from random initialisation (`{model}` architecture)"
    )  # fmt: skip
    kind = facts.task.description
    labels = ", ".join(f"`{label}`" for label in facts.task.label_names)
    splits = ", ".join(f"{split}: {n:,}" for split, n in facts.split_sizes.items())
    settings = "\n".join(f"| {key} | {value} |" for key, value in facts.hyperparameters.items())
    size = f"{facts.image_size[0]}x{facts.image_size[1]}" if facts.image_size else "the model's"
    usage = (
        "```python\nfrom transformers import pipeline\n\n"
        f'classifier = pipeline("image-classification", model="{facts.repo_id or "PATH"}")\n'
        f'classifier("scan.png", top_k={min(5, len(facts.task.label_names))})\n```'
    )
    sections = [
        f"# {facts.repo_id or model} for {facts.task.task} medical image classification",
        f"An image classifier {start} with [medft](https://github.com/medft/medft) on "
        f"`{dataset}`: {kind}.",
        NOT_FOR_CLINICAL_USE,
        "## Labels",
        labels,
        "## Data",
        f"Dataset `{dataset}`; images per split: {splits}. Inputs are {size} pixels, "
        "greyscale scans repeated to three channels.",
        *(
            evaluation_section(facts.evaluation)
            if facts.evaluation
            else ["## Results on the test split", metrics_table(facts.test_metrics, "test")]
        ),
        "## Best validation epoch",
        metrics_table(facts.validation_metrics, "eval"),
        "## Training curves",
        f"![Loss and main metric per epoch]({CURVES_NAME})",
        "## Training hyper-parameters",
        "| setting | value |\n|---|---|\n" + settings,
        *([f"The saved weights are {facts.saved_weights}."] if facts.saved_weights else []),
        "## How to use",
        usage,
        INTENDED_USE,
        f"Intended for research on {facts.task.task} classification of images like those in "
        f"`{dataset}`. Scores are not calibrated probabilities unless checked with "
        "`medft evaluate`. Performance on other scanners, sites, populations or image "
        "preparations is unknown; labels of public datasets can be noisy (NIH ChestX-ray14's "
        "are text-mined).",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
