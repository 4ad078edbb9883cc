"""Test-time augmentation: probabilities averaged over a few views of each image.

Views are tensor operations on the preprocessed batch, on the device: flips and
zoomed centre crops. A flip is offered only when the model was trained with it
(the run's `recipe.json`), so a chest X-ray model, trained without left-right flips
because left and right are anatomy, is never scored on mirrored images.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional

from medft.config.evaluation import TTA_CHOICES
from medft.errors import MedftError
from medft.parsing import RECIPE_NAME

ZOOMS = (0.9, 0.8)  # centre crops of 90% and 80% of the input, resized back to it


@dataclass(frozen=True)
class View:
    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]


def zoomed(share: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        crop_h, crop_w = round(height * share), round(width * share)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        crop = pixels[..., top : top + crop_h, left : left + crop_w]
        return functional.interpolate(
            crop, size=(height, width), mode="bilinear", align_corners=False, antialias=False
        )

    return apply


ORIGINAL = View("original", lambda pixels: pixels)
HFLIP = View("horizontal flip", lambda pixels: pixels.flip(-1))
VFLIP = View("vertical flip", lambda pixels: pixels.flip(-2))


def trained_flips(model_folder: Path) -> dict[str, float] | None:
    """The flip probabilities the model was trained with (None: no recipe.json beside it)."""
    path = Path(model_folder) / RECIPE_NAME
    if not path.is_file():
        return None
    data = json.loads(path.read_text())["data"]
    return {"hflip": data.get("horizontal_flip", 0.0), "vflip": data.get("vertical_flip", 0.0)}


def tta_views(requested: list[str], model_folders: list[Path]) -> list[View]:
    """The views for ``requested`` (``flip``: the flips the models were trained with; ``hflip``
    / ``vflip``: one of them, refused when a model was trained without it; ``scales``: zoomed
    centre crops), the original image first."""
    unknown = [name for name in requested if name not in TTA_CHOICES]
    if unknown:
        raise MedftError(f"--tta {unknown[0]}: choose from {', '.join(TTA_CHOICES)}.")
    views = [ORIGINAL]
    flips = [trained_flips(folder) for folder in model_folders]
    for name, view in (("hflip", HFLIP), ("vflip", VFLIP)):
        trained = all(f[name] > 0 for f in flips if f is not None)
        if name in requested:
            if not trained:
                what = "horizontal" if name == "hflip" else "vertical"
                raise MedftError(
                    f"--tta {name}: the model was trained without {what} flips ({name} 0 in its "
                    "recipe, as chest X-ray recipes are: left and right are anatomy), so "
                    "mirrored images are not ones it knows; leave it out."
                )
            views.append(view)
        elif "flip" in requested:
            if any(f is None for f in flips):
                raise MedftError(
                    "--tta flip needs the recipe.json that medft train writes beside the model, "
                    "to use only the flips it was trained with; name them instead (--tta hflip)."
                )
            if trained:
                views.append(view)
    if "scales" in requested:
        views += [View(f"zoom {share:g}", zoomed(share)) for share in ZOOMS]
    return views
