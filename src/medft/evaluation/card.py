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
from medft.evaluation.card_base_model import licence_section, preprocessing_lines
from medft.evaluation.card_subgroups import SUBGROUPS_HEADING, subgroup_section
from medft.evaluation.conformal import coverage_notes, coverage_summary
from medft.evaluation.evaluate import CHEXNET_NOTE, EvaluationReport
from medft.evaluation.plots import (
    CONFUSION_NAME,
    CURVES_NAME,
    PR_NAME,
    RELIABILITY_NAME,
    ROC_NAME,
    UNCALIBRATED_NAME,
)
from medft.evaluation.reporting import (
    chexnet_aurocs,
    finding_rows,
    interval_text,
    positive_threshold,
    temperature_text,
)
from medft.modeling.licence import BaseLicence
from medft.public_names import dataset_name, model_name
from medft.tasks import TaskInfo

NOT_FOR_CLINICAL_USE = (
    "> **Not for clinical use.** This model is a research artefact. It is not a medical "
    "device, has not been validated prospectively, and must not be used to diagnose, "
    "triage or treat patients."
)
INTENDED_USE = "## Intended use and limitations"  # the section `medft serve` shows
HYPERPARAMETERS = (
    "learning_rate", "num_train_epochs", "per_device_train_batch_size",
    "gradient_accumulation_steps", "optim", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "fp16", "bf16", "seed",
)  # fmt: skip
TECHNIQUES = {
    ModelArguments: (
        "freeze", "unfreeze_last_n", "gradual_unfreeze_epochs", "head_dropout",
        "head_hidden_sizes", "drop_path_rate", "lora_r", "lora_alpha", "lora_dropout",
        "lora_target_modules", "image_size", "probe_hidden",
    ),
    DataArguments: (
        "crop_scale", "crop_ratio", "horizontal_flip", "vertical_flip", "rotation_degrees", "zoom",
        "brightness", "contrast", "auto_augment", "randaugment_magnitude", "random_erasing",
        "mixup_alpha", "cutmix_alpha", "mix_probability",
    ),
    MedftTrainingArguments: (
        "layer_decay", "lr_decay_rate", "lr_decay_steps", "lr_decay_staircase",
        "class_weighting", "sampler", "early_stopping_patience", "label_smoothing_factor",
        "ema_decay", "calibration", "conformal", "training_mode", "probe_epochs",
        "probe_learning_rate", "loss", "focal_gamma", "focal_alpha", "asl_gamma_neg",
        "asl_gamma_pos", "asl_clip",
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
    base_licence: BaseLicence | None = None  # the licence the base model's weights come under
    preprocessing: dict[str, Any] | None = None  # the saved processor's steps, when describable


def hub_id(name: str) -> str | None:
    """A Hub id worth linking as base_model / dataset, or None for local paths and model types."""
    if Path(name).expanduser().exists() or "/" not in name or name.startswith(("/", ".")):
        return None
    return name


def metrics_table(metrics: dict[str, float], prefix: str) -> str:
    rows = [
        f"| {key.removeprefix(prefix + '_').replace('_', ' ')} | {value:.4f} |"
        for key, value in metrics.items()
        if key.startswith(prefix + "_")
        and isinstance(value, float)
        and not key.endswith(("runtime", "per_second", "loss"))
    ]
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
        chexnet = ["CheXNet AUROC*"] if "CheXNet*" in table[0] else []
        columns = ["finding", "AUROC", "95% CI", "threshold", "F1", *chexnet]
        rows = ("| " + " | ".join(row.values()) + " |" for row in table)
        lines.append(
            "\n".join(["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|", *rows])
        )
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
    if report.conformal is not None:
        lines.append(
            f"{coverage_summary(report.conformal)}; `conformal.json` holds the sets' "
            "thresholds, which `medft predict`, `medft serve` and the ONNX export apply. "
            + " ".join(f"Note: {note}." for note in coverage_notes(report.conformal))
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
        **(facts.base_licence.card_data() if facts.base_licence else {}),
    )
    origin = facts.weights_origin or (base and f"[`{base}`](https://huggingface.co/{base})")
    start = (
        f"fine-tuned from {origin}"
        if origin
        else f"trained from random initialisation (`{model}` architecture)"
    )
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
        *preprocessing_lines(facts.preprocessing),
        *licence_section(facts.base_licence),
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
