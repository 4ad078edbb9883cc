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
from transformers import HfArgumentParser, TrainingArguments

from medft.errors import MedftError

AUTO = "auto"


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

    def __post_init__(self) -> None:
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
    model_revision: str = field(default="main", metadata={"help": "Hub revision to load."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub (off: it runs as you)."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.config_overrides, str):
            try:
                self.config_overrides = json.loads(self.config_overrides)
            except json.JSONDecodeError as error:
                raise MedftError(f"config_overrides is not valid JSON: {error}.") from None
        if self.config_overrides is not None and not isinstance(self.config_overrides, dict):
            raise MedftError("config_overrides must be a mapping of setting: value.")
        if self.image_size is not None and self.image_size < 8:
            raise MedftError(f"image_size must be at least 8, got {self.image_size}.")

    @property
    def is_timm(self) -> bool:
        return self.model_name_or_path.startswith("timm/")


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
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept false: the image column is read by the transforms."}
    )
    train_metrics_samples: int = field(
        default=1000,
        metadata={
            "help": "At each evaluation, also score this many training images (eval transforms) "
            "so the curves show train and validation metrics; 0 turns it off."
        },
    )


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


def parse_recipe(
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> tuple[DataArguments, ModelArguments, MedftTrainingArguments]:
    """Parse a recipe file (or a dict of ``values``) plus command-line ``overrides``."""
    source = str(recipe) if recipe is not None else "recipe"
    content = read_recipe_file(recipe) if recipe is not None else {}
    content = check_recipe_values({**content, **(values or {})}, source)
    content.setdefault("use_cpu", not accelerator_available())
    given = set(content) | {
        o.lstrip("-").replace("-", "_") for o in overrides or [] if o[:2] == "--"
    }
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
        flag = unknown[0].lstrip("-").replace("-", "_")
        hint = closest_key(flag, list(field_types()))
        raise MedftError(f"unknown command-line option '{unknown[0]}'{hint}.")
    return tuple(parsed)  # type: ignore[return-value]
