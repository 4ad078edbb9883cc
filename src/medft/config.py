"""Recipes: typed dataclasses for data, model and training, parsed from YAML with CLI overrides.

A recipe is a flat YAML file whose keys are fields of `DataArguments`,
`ModelArguments` or `MedftTrainingArguments` (which is `transformers.TrainingArguments`
with medft's defaults). `HfArgumentParser` turns the fields into options, so the
`help` text below is also the CLI help, and any key can be overridden after the
YAML: ``accelerate launch src/finetune.py recipe.yaml --learning_rate 3e-4``.

Every mistake is a `MedftError` naming the key: an unknown key (with the closest
valid one), a value of the wrong type, a missing required key, or a combination
that `TrainingArguments` rejects.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, IntervalStrategy, TrainingArguments
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from medft.errors import MedftError

AUTO = "auto"
EXPONENTIAL = "exponential"
FREEZE_MODES = ("none", "backbone", "partial")
AUTO_AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")
THRESHOLD_METHODS = ("auto", "youden", "f1")


def check_probability(*names: str, values: Any) -> None:
    for name in names:
        value = getattr(values, name)
        if not 0 <= value <= 1:
            raise MedftError(f"{name} must be a probability in [0, 1], got {value}.")


def check_range(name: str, bounds: list[float], low: float, high: float | None) -> None:
    if len(bounds) != 2 or bounds[0] > bounds[1] or bounds[0] <= low:
        raise MedftError(f"{name} must be [low, high] with {low} < low <= high, got {bounds}.")
    if high is not None and bounds[1] > high:
        raise MedftError(f"{name} must not go above {high}, got {bounds}.")


def accelerator_available() -> bool:
    """A GPU (CUDA / ROCm), Apple MPS or Intel XPU that PyTorch can use."""
    import torch

    xpu = getattr(torch, "xpu", None)
    return bool(
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )


@dataclass
class DataArguments:
    """Which dataset to train on, and how to read it."""

    dataset_name: str = field(
        metadata={
            "help": "A folder written by `medft prepare`, or a Hugging Face Hub dataset id. "
            "Its `train` and `validation` splits are used for training; `test`, if present, "
            "for the final evaluation."
        }
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of a Hub dataset."}
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the labels; default `label` (single-label, a ClassLabel) or "
            "`labels` (multi-label, a list of ClassLabel), whichever the dataset has."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split to pick the best epoch on."}
    )
    test_split: str = field(
        default="test", metadata={"help": "Split for the final evaluation ('' to skip)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training images (for quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only this many validation and test images."}
    )

    # augmentation (training images only) -----------------------------------------------------
    crop_scale: list[float] = field(
        default_factory=lambda: [0.8, 1.0],
        metadata={"help": "RandomResizedCrop area range; [1.0, 1.0] turns cropping off."},
    )
    crop_ratio: list[float] = field(
        default_factory=lambda: [0.75, 1.3333],
        metadata={"help": "RandomResizedCrop aspect-ratio range."},
    )
    horizontal_flip: float = field(
        default=0.0,
        metadata={"help": "Probability of a left-right flip (keep 0 for chest X-rays: anatomy)."},
    )
    vertical_flip: float = field(default=0.0, metadata={"help": "Probability of an up-down flip."})
    rotation_degrees: float = field(
        default=0.0, metadata={"help": "Random rotation within +/- this many degrees."}
    )
    zoom: float = field(
        default=0.0,
        metadata={"help": "Random zoom in or out by up to this fraction (Keras RandomZoom)."},
    )
    brightness: float = field(default=0.0, metadata={"help": "Brightness jitter strength."})
    contrast: float = field(default=0.0, metadata={"help": "Contrast jitter strength."})
    auto_augment: str = field(
        default="none",
        metadata={"help": "Learned policy on top: none | randaugment | trivialaugment."},
    )
    randaugment_magnitude: int = field(default=9, metadata={"help": "RandAugment magnitude."})
    random_erasing: float = field(
        default=0.0, metadata={"help": "Probability of erasing a random rectangle."}
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "MixUp Beta(alpha, alpha); 0 turns it off."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix Beta(alpha, alpha); 0 turns it off."}
    )
    mix_probability: float = field(
        default=1.0, metadata={"help": "Share of batches mixed when mixup or cutmix is on."}
    )

    def __post_init__(self) -> None:
        check_probability(
            "horizontal_flip", "vertical_flip", "random_erasing", "mix_probability", values=self
        )
        check_range("crop_scale", self.crop_scale, low=0.0, high=1.0)
        check_range("crop_ratio", self.crop_ratio, low=0.0, high=None)
        if self.auto_augment not in AUTO_AUGMENT_POLICIES:
            raise MedftError(
                f"auto_augment must be one of {', '.join(AUTO_AUGMENT_POLICIES)}, "
                f"got '{self.auto_augment}'."
            )
        for name in ("rotation_degrees", "zoom", "brightness", "contrast", "mixup_alpha",
                     "cutmix_alpha"):  # fmt: skip
            if getattr(self, name) < 0:
                raise MedftError(f"{name} must not be negative, got {getattr(self, name)}.")
        if self.zoom >= 1:
            raise MedftError(f"zoom must be below 1 (a fraction), got {self.zoom}.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MedftError(f"{name} must be at least 1, got {value}.")


@dataclass
class ModelArguments:
    """Which backbone to fine-tune, and how to build it."""

    model_name_or_path: str = field(
        metadata={
            "help": "A Hub model id (`google/vit-base-patch16-224-in21k`), a local model folder, "
            "a transformers model type with `pretrained: false` (`vit`, `convnext`, ...), or "
            "`timm/<architecture>[.<pretrained tag>]` for any timm model (`timm/resnet50.a1_in1k`)."
        }
    )
    pretrained: bool = field(
        default=True,
        metadata={
            "help": "Start from pretrained weights. false builds the same architecture with random "
            "weights and downloads nothing for timm names, local folders and model types."
        },
    )
    config_overrides: dict | str | None = field(
        default=None,
        metadata={
            "help": "Architecture settings: for transformers models, config attributes "
            "(`{hidden_size: 64, num_hidden_layers: 2}`); for timm models, keyword arguments of "
            "`timm.create_model` (`{drop_rate: 0.1}`). A JSON string on the command line."
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input resolution (square). Default: the model's own. Changing it is allowed "
            "for random weights and for CNNs, not for pretrained transformers."
        },
    )
    pretrained_weights: str | None = field(
        default=None,
        metadata={
            "help": "A local weights file (.safetensors, .pth, .pt, .bin) for a "
            "`timm/<architecture>` model, for machines without the Hub: a state dict in timm's "
            "parameter names, read as timm reads checkpoints (nested `state_dict` / `model` "
            "keys, `module.` prefixes) and without running pickled code. A classifier of "
            "another size is replaced. A file carries no preprocessing: give it with "
            "pretrained_cfg_overlay and image_size."
        },
    )
    pretrained_cfg_overlay: dict | str | None = field(
        default=None,
        metadata={
            "help": "timm preprocessing the weights expect, over the architecture's default "
            "(timm's pretrained_cfg fields): {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], "
            "interpolation: bicubic, crop_pct: 0.875, crop_mode: center}; the input size is "
            "image_size. Written into the saved config.json, so pipeline() preprocesses alike. "
            "timm models only. A JSON string on the command line."
        },
    )
    # freezing ---------------------------------------------------------------------------------
    freeze: str = field(
        default="none",
        metadata={
            "help": "What stays fixed: none | backbone (only the head trains) | partial (the "
            "head and the top `unfreeze_last_n` backbone blocks train)."
        },
    )
    unfreeze_last_n: int = field(
        default=0,
        metadata={
            "help": "With freeze: partial, how many of the backbone's own blocks (ViT encoder "
            "layers; ResNet / ConvNeXt stages; EfficientNet blocks) train, counted from the top."
        },
    )
    gradual_unfreeze_epochs: int = field(
        default=0,
        metadata={"help": "Every this many epochs, unfreeze one more block, top down (0: never)."},
    )
    # head -------------------------------------------------------------------------------------
    head_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the features entering the classifier."}
    )
    head_hidden_sizes: list[int] | None = field(
        default=None,
        metadata={
            "help": "An MLP head's hidden layer, e.g. [512]. Only timm architectures that build "
            "one themselves (`head_hidden_size`: ConvNeXt, ...) can save and reload it with plain "
            "pipeline(); anything else is refused rather than saved broken."
        },
    )
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Stochastic depth rate, for backbones that have it."}
    )
    # LoRA -------------------------------------------------------------------------------------
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains the weights themselves."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout inside LoRA layers."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names LoRA adapts; default per family (the query and value "
            "projections of transformers ViT-like models, qkv for timm ViTs, convolutions and "
            "linear layers for CNNs)."
        },
    )
    save_adapter_only: bool = field(
        default=False,
        metadata={
            "help": "Save (and push) only the LoRA adapter, loadable with peft, instead of the "
            "merged model that plain pipeline() loads."
        },
    )
    model_revision: str = field(default="main", metadata={"help": "Hub revision to load."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub (off: it runs as you)."}
    )

    def __post_init__(self) -> None:
        self.config_overrides = mapping_value("config_overrides", self.config_overrides)
        self.pretrained_cfg_overlay = mapping_value(
            "pretrained_cfg_overlay", self.pretrained_cfg_overlay
        )
        check_pretrained_cfg_overlay(self.pretrained_cfg_overlay)
        if self.pretrained_weights is not None:
            check_pretrained_weights(self)
        if self.pretrained_cfg_overlay and is_model_type(self.model_name_or_path):
            raise MedftError(
                "pretrained_cfg_overlay is timm's preprocessing; a transformers model's is its "
                "preprocessor_config.json (image_mean, image_std, resample)."
            )
        if self.image_size is not None and self.image_size < 8:
            raise MedftError(f"image_size must be at least 8, got {self.image_size}.")
        if self.freeze not in FREEZE_MODES:
            raise MedftError(
                f"freeze must be one of {', '.join(FREEZE_MODES)}, got '{self.freeze}'."
            )
        if self.freeze == "partial" and self.unfreeze_last_n < 1:
            raise MedftError("freeze: partial needs unfreeze_last_n (how many top blocks train).")
        if self.unfreeze_last_n and self.freeze != "partial":
            raise MedftError("unfreeze_last_n only applies with freeze: partial.")
        if self.gradual_unfreeze_epochs and self.freeze == "none":
            raise MedftError("gradual_unfreeze_epochs needs freeze: backbone or partial.")
        if self.lora_r < 0 or (self.lora_r and self.freeze != "none"):
            raise MedftError(
                "lora_r > 0 already keeps the backbone frozen; leave freeze at none with LoRA."
            )
        if self.save_adapter_only and not self.lora_r:
            raise MedftError("save_adapter_only needs LoRA (lora_r > 0).")
        check_probability("head_dropout", "lora_dropout", values=self)
        if self.head_hidden_sizes is not None:
            if is_model_type(self.model_name_or_path):
                raise MedftError(
                    "head_hidden_sizes: a transformers model's config cannot describe an MLP head, "
                    "so pipeline() would reload the model without it; use head_dropout, or a timm "
                    "backbone with its own MLP head (e.g. timm/convnext_small)."
                )
            if len(self.head_hidden_sizes) != 1:
                raise MedftError(
                    f"head_hidden_sizes {self.head_hidden_sizes}: only one hidden layer can be "
                    "saved so that plain pipeline() reloads it (timm's head_hidden_size)."
                )

    @property
    def is_timm(self) -> bool:
        """A `timm/<architecture>` name (a local folder or Hub id may hold a timm model too:
        the loaded config tells)."""
        return self.model_name_or_path.startswith("timm/")


def is_model_type(name: str) -> bool:
    """A transformers model type (`vit`, `convnext`, ...) rather than a folder or Hub id."""
    return name in CONFIG_MAPPING and not Path(name).expanduser().exists()


def mapping_value(key: str, value: dict | str | None) -> dict | None:
    """A mapping recipe key, given as YAML or as a JSON string on the command line."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise MedftError(f"{key} is not valid JSON: {error}.") from None
    if value is not None and not isinstance(value, dict):
        raise MedftError(f"{key} must be a mapping of setting: value.")
    return value


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")


def check_pretrained_cfg_overlay(overlay: dict | None) -> None:
    for key, value in (overlay or {}).items():
        if key in ("mean", "std"):
            if not (isinstance(value, list) and value and all(isinstance(v, (int, float))
                                                              for v in value)):  # fmt: skip
                raise MedftError(f"pretrained_cfg_overlay.{key} must be a list of numbers "
                                 f"(one per channel), got {value!r}.")  # fmt: skip
            if key == "std" and min(value) <= 0:
                raise MedftError(f"pretrained_cfg_overlay.std must be positive, got {value}.")
        elif key == "interpolation" and value not in INTERPOLATIONS:
            raise MedftError(
                f"pretrained_cfg_overlay.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {value!r}."
            )
        elif key == "crop_pct" and not (isinstance(value, (int, float)) and 0 < value <= 1):
            raise MedftError(f"pretrained_cfg_overlay.crop_pct must be in (0, 1], got {value!r}.")
        elif key == "crop_mode" and value not in CROP_MODES:
            raise MedftError(
                f"pretrained_cfg_overlay.crop_mode must be one of {', '.join(CROP_MODES)}, "
                f"got {value!r}."
            )
        elif key not in ("mean", "std", "interpolation", "crop_pct", "crop_mode"):
            hint = " (the input size is the image_size key)" if key == "input_size" else ""
            raise MedftError(
                f"pretrained_cfg_overlay: unknown field '{key}'{hint}; it takes mean, std, "
                "interpolation, crop_pct and crop_mode."
            )


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def check_pretrained_weights(args: ModelArguments) -> None:
    if not args.is_timm:
        raise MedftError(
            "pretrained_weights is for timm/<architecture> names; for a model folder (either "
            "family) set model_name_or_path to the folder instead."
        )
    if not args.pretrained:
        raise MedftError("pretrained_weights with pretrained: false: keep one of the two.")
    if not args.pretrained_weights.lower().endswith(WEIGHT_SUFFIXES):
        raise MedftError(
            f"pretrained_weights {args.pretrained_weights}: expected a state dict file "
            f"({', '.join(WEIGHT_SUFFIXES)})."
        )


@dataclass
class MedftTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with defaults for fine-tuning image classifiers."""

    output_dir: str = field(metadata={"help": "Where checkpoints, the model and its reports go."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint."})
    logging_strategy: str = field(default="epoch", metadata={"help": "When to log the loss."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Keep the epoch with the best `metric_for_best_model`."}
    )
    metric_for_best_model: str | None = field(
        default=AUTO,
        metadata={
            "help": "Validation metric that picks the best epoch; `auto` is `macro_f1` for "
            "single-label and `mean_auroc` for multi-label data."
        },
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (the best one is always kept)."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch per device."})
    dataloader_num_workers: int = field(
        default=2, metadata={"help": "Processes decoding and transforming images."}
    )
    channels_last: bool | None = field(
        default=None,
        metadata={
            "help": "Lay weights and activations out channels-last, which oneDNN and cuDNN run "
            "convolutions fastest in (2x for EfficientNet-Lite0 training on a 2-core Xeon); the "
            "same arithmetic. Default: on for convolutional networks, off for ViT-like ones."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept false: the image column is read by the transforms."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "The batch key holding the labels."}
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay (timm / MAE fine-tuning): block i of n gets "
            "lr * layer_decay^(n - i); the head gets lr. E.g. 0.75."
        },
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": "Any schedule of transformers (linear, cosine, cosine_with_restarts, "
            "polynomial, constant, constant_with_warmup, inverse_sqrt, reduce_lr_on_plateau, "
            "cosine_with_min_lr, warmup_stable_decay, ...) or exponential."
        },
    )
    lr_decay_rate: float = field(
        default=0.96,
        metadata={"help": "lr_scheduler_type: exponential multiplies the rate by this ..."},
    )
    lr_decay_steps: int = field(
        default=1000, metadata={"help": "... every this many optimizer steps (after warmup)."}
    )
    lr_decay_staircase: bool = field(
        default=False, metadata={"help": "Decay in steps rather than continuously."}
    )
    class_weighting: str = field(
        default="none",
        metadata={
            "help": "none | balanced: weight the loss by inverse class frequency (cross-entropy "
            "class weights; for multi-label, BCE pos_weight = negatives / positives per finding)."
        },
    )
    sampler: str = field(
        default="random", metadata={"help": "random | weighted (oversample rare classes)."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement of the metric."},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "The smallest change that counts as an improvement."}
    )
    search_space: dict | str | None = field(
        default=None,
        metadata={
            "help": "For `medft search`: key -> {type: float|int|categorical, low, high, log, "
            "choices}. A JSON string on the command line."
        },
    )
    train_metrics_samples: int = field(
        default=1000,
        metadata={
            "help": "At each evaluation, also score this many training images (eval transforms) "
            "so the curves show train and validation metrics; 0 turns it off."
        },
    )
    # evaluation after training (what `medft evaluate` does) ---------------------------------
    bootstrap_resamples: int = field(
        default=1000,
        metadata={
            "help": "Bootstrap resamples for the 95% confidence intervals of the final "
            "evaluation (of patients when the data has patient_id); 0 turns them off."
        },
    )
    threshold_method: str = field(
        default="auto",
        metadata={
            "help": "How the final evaluation tunes decision thresholds on the validation split: "
            "youden | f1 | auto (youden for binary, f1 per finding for multi-label). Saved as "
            "thresholds.json, which `medft predict` applies."
        },
    )

    def __post_init__(self) -> None:
        if self.class_weighting not in ("none", "balanced"):
            raise MedftError(
                f"class_weighting must be none or balanced, got '{self.class_weighting}'."
            )
        if self.sampler not in ("random", "weighted"):
            raise MedftError(f"sampler must be random or weighted, got '{self.sampler}'.")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise MedftError(
                f"threshold_method must be one of {', '.join(THRESHOLD_METHODS)}, "
                f"got '{self.threshold_method}'."
            )
        if self.bootstrap_resamples < 0:
            raise MedftError(f"bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}.")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise MedftError(f"layer_decay must be in (0, 1], got {self.layer_decay}.")
        if not 0 < self.lr_decay_rate <= 1 or self.lr_decay_steps < 1:
            raise MedftError("lr_decay_rate must be in (0, 1] and lr_decay_steps at least 1.")
        if isinstance(self.search_space, str):
            try:
                self.search_space = json.loads(self.search_space)
            except json.JSONDecodeError as error:
                raise MedftError(f"search_space is not valid JSON: {error}.") from None
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise MedftError("early_stopping_patience must be at least 1.")
            if self.eval_strategy in ("no", IntervalStrategy.NO) or not self.load_best_model_at_end:
                raise MedftError(
                    "early_stopping_patience needs evaluations and load_best_model_at_end: true "
                    "(set eval_strategy and save_strategy to the same value, e.g. epoch)."
                )
        exponential = self.exponential_decay
        if exponential:  # TrainingArguments accepts only its own schedule names
            self.lr_scheduler_type = "constant"
        super().__post_init__()
        if exponential:
            self.lr_scheduler_type = EXPONENTIAL

    @property
    def exponential_decay(self) -> bool:
        """Derived, so a search trial that sets lr_scheduler_type switches it too."""
        return self.lr_scheduler_type == EXPONENTIAL


RECIPE_DATACLASSES = (DataArguments, ModelArguments, MedftTrainingArguments)


class RecipeParser(HfArgumentParser):
    """`HfArgumentParser` whose mistakes are `MedftError`s rather than usage dumps.

    Abbreviated options are refused, so a typo such as ``--learning_rat`` is an
    error rather than a silent match.
    """

    def __init__(self) -> None:
        super().__init__(RECIPE_DATACLASSES, allow_abbrev=False)

    def error(self, message: str) -> typing.NoReturn:
        raise MedftError(message)


def field_types() -> dict[str, tuple[type, Any]]:
    """Recipe key -> (resolved type, its dataclass field), over all recipe dataclasses."""
    found = {}
    for cls in RECIPE_DATACLASSES:
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if item.init:
                found[item.name] = (hints[item.name], item)
    return found


def required_keys() -> list[str]:
    return [
        name
        for name, (_, item) in field_types().items()
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    ]


def closest_key(key: str, keys: list[str]) -> str:
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_value(key: str, hint: Any, value: Any) -> Any:
    """``value`` from YAML, checked against the field's type (ints may stand for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = []
        for option in (a for a in args if a is not type(None)):
            try:
                return check_value(key, option, value)
            except MedftError as error:
                problems.append(error)
        raise problems[0]
    if origin is typing.Literal:
        if value in args:
            return value
        raise MedftError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}.")
    expected = origin or hint
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif expected is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif expected is list:
        items = value if isinstance(value, list) else [value]
        return [check_value(key, args[0], item) for item in items] if args else items
    elif expected is dict:
        if isinstance(value, dict):
            return value
    elif isinstance(expected, type) and issubclass(expected, Enum):
        if value in [member.value for member in expected]:
            return value
        raise MedftError(
            f"{key} must be one of {', '.join(m.value for m in expected)}, got {value!r}."
        )
    else:
        return value
    name = getattr(expected, "__name__", str(expected))
    raise MedftError(f"{key} must be a {name}, got {value!r} ({type(value).__name__}).")


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MedftError(f"recipe {path} does not exist.")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MedftError(f"recipe {path} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(content, dict):
        raise MedftError(f"recipe {path} must be a mapping of key: value.")
    return content


def check_recipe_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Unknown keys and wrongly typed values in a recipe, as one-line errors naming the key."""
    known = field_types()
    checked = {}
    for key, value in values.items():
        if key not in known:
            raise MedftError(f"{source}: unknown key '{key}'{closest_key(key, list(known))}.")
        try:
            checked[key] = check_value(key, known[key][0], value)
        except MedftError as error:
            raise MedftError(f"{source}: {error}") from None
    return checked


def option_key(option: str) -> str:
    """The recipe key of a command-line option: ``--output-dir=x`` -> ``output_dir``."""
    return option.lstrip("-").split("=", 1)[0].replace("-", "_")


def parse_recipe(
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> tuple[DataArguments, ModelArguments, MedftTrainingArguments]:
    """Parse a recipe file (or a dict of ``values``) plus command-line ``overrides``."""
    source = str(recipe) if recipe is not None else "recipe"
    content = read_recipe_file(recipe) if recipe is not None else {}
    refuse_secrets({**content, **(values or {})}, overrides or [], source)
    content = check_recipe_values({**content, **(values or {})}, source)
    content.setdefault("use_cpu", not accelerator_available())
    given = set(content) | {option_key(o) for o in overrides or [] if o[:2] == "--"}
    missing = [key for key in required_keys() if key not in given]
    if missing:
        raise MedftError(f"{source}: missing required key(s) {', '.join(missing)}.")

    parser = RecipeParser()
    for action in parser._actions:
        if action.dest in content:
            action.default = content[action.dest]
            action.required = False
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(
            args=list(overrides or []), return_remaining_strings=True
        )
    except ValueError as error:  # TrainingArguments rejecting a combination of keys
        raise MedftError(f"{source}: {error}".replace("\n", " ")) from None
    if unknown:
        hint = closest_key(option_key(unknown[0]), list(field_types()))
        raise MedftError(f"unknown command-line option '{unknown[0]}'{hint}.")
    data_args, model_args, training_args = parsed
    check_combinations(model_args.lora_r, training_args.layer_decay)
    return data_args, model_args, training_args


SECRET_KEYS = ("hub_token",)


def refuse_secrets(values: dict[str, Any], overrides: list[str], source: str) -> None:
    """A token in a recipe or on the command line ends up in files, logs and shell history."""
    given = [key for key in SECRET_KEYS if key in values]
    given += [option_key(o) for o in overrides if o[:2] == "--" and option_key(o) in SECRET_KEYS]
    if given:
        raise MedftError(
            f"{source}: {given[0]} does not belong in a recipe or on the command line (it would "
            "be written to disk); set the HF_TOKEN environment variable or run `hf auth login`."
        )


def check_combinations(lora_r: int, layer_decay: float | None) -> None:
    """Techniques that cannot work together, refused before anything is built."""
    if lora_r and layer_decay is not None:
        raise MedftError("layer_decay with LoRA: the adapters have no depth; use one or the other.")


def overridden_values(overrides: list[str]) -> dict[str, Any]:
    """Only the keys given on the command line, with their parsed values."""
    parser = RecipeParser()
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    return vars(parser.parse_known_args(overrides)[0])
