"""Checks shared by the recipe and command dataclasses; each mistake is a `MedftError`."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from medft.errors import MedftError


def check_finite(values: Any) -> None:
    """Every float setting of the dataclass ``values`` (and every float in a list setting) is a
    number: NaN or infinity means nothing for any of them."""
    for item in dataclasses.fields(values):
        value = getattr(values, item.name)
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(number, float) and not math.isfinite(number) for number in numbers):
            what = "finite numbers" if isinstance(value, list) else "a finite number"
            raise MedftError(f"{item.name} must be {what}, got {value}.")


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
            if not (
                isinstance(value, list)
                and value
                and all(isinstance(v, (int, float)) for v in value)
            ):
                raise MedftError(
                    f"pretrained_cfg_overlay.{key} must be a list of numbers "
                    f"(one per channel), got {value!r}."
                )
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
