"""Reading recipes: YAML files and command-line overrides into the recipe dataclasses.

A recipe's keys are fields of `DataArguments`, `ModelArguments` or
`MedftTrainingArguments`; `HfArgumentParser` turns the fields into options, so any
key can be overridden after the YAML (``accelerate launch src/finetune.py
recipe.yaml --learning_rate 3e-4``). Every mistake is a `MedftError` naming the key:
an unknown key (with the closest valid one), a value of the wrong type, a missing
required key, a secret, or a combination that `TrainingArguments` rejects.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from medft.config import (
    RECIPE_DATACLASSES,
    DataArguments,
    MedftTrainingArguments,
    ModelArguments,
    accelerator_available,
)
from medft.config.distributed import fit_to_launch
from medft.config.probe import check_training_mode
from medft.errors import MedftError

RECIPE_NAME = "recipe.json"  # a run's data and model settings, written beside its model


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


RENAMED_KEYS = {  # keys of older transformers releases, and where their values go now
    "warmup_ratio": "warmup_steps (a value below 1 is a fraction of the training steps)",
}


def closest_key(key: str, keys: list[str]) -> str:
    if key in RENAMED_KEYS:
        return f" (transformers now calls it {RENAMED_KEYS[key]})"
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


class Recipe(tuple):
    """A parsed recipe: unpacks as (data, model, training) arguments, and keeps in ``given``
    the keys it was given (the recipe file, then the command line), merged and checked."""

    given: dict[str, Any]

    def __new__(cls, data, model, training, given: dict[str, Any]) -> Recipe:
        recipe = super().__new__(cls, (data, model, training))
        recipe.given = given
        return recipe

    @property
    def data(self) -> DataArguments:
        return self[0]

    @property
    def model(self) -> ModelArguments:
        return self[1]

    @property
    def training(self) -> MedftTrainingArguments:
        return self[2]


def parse_recipe(
    recipe: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Recipe:
    """Parse a recipe file (or a dict of ``values``) plus command-line ``overrides``."""
    source = str(recipe) if recipe is not None else "recipe"
    content = read_recipe_file(recipe) if recipe is not None else {}
    refuse_secrets({**content, **(values or {})}, overrides or [], source)
    content = check_recipe_values({**content, **(values or {})}, source)
    given_values = content | overridden_values(overrides or [])
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
    check_combinations(
        model_args.lora_r,
        training_args.layer_decay,
        training_args.ema_decay,
        training_args.calibration,
    )
    check_training_mode(model_args, training_args)
    fit_to_launch(training_args)
    return Recipe(data_args, model_args, training_args, given_values)


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


def check_combinations(
    lora_r: int,
    layer_decay: float | None,
    ema_decay: float | None = None,
    calibration: str = "none",
) -> None:
    """Techniques that cannot work together, refused before anything is built."""
    if lora_r and layer_decay is not None:
        raise MedftError("layer_decay with LoRA: the adapters have no depth; use one or the other.")
    if lora_r and ema_decay is not None:
        raise MedftError(
            "ema_decay with LoRA: an average of the adapters is not supported yet; train the "
            "weights themselves (lora_r: 0) to keep an EMA."
        )
    if lora_r and calibration != "none":
        raise MedftError(
            "calibration with LoRA: train first, then run `medft calibrate` on the merged model."
        )


def overridden_values(overrides: list[str]) -> dict[str, Any]:
    """Only the keys given on the command line, with their parsed values."""
    parser = RecipeParser()
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    return vars(parser.parse_known_args(overrides)[0])
