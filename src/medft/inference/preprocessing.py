"""A model's preprocessing as plain settings (``preprocessor.json``), and those settings applied.

`medft export` writes the settings beside ``model.onnx``, so that anyone, in any
language, can make the inputs the model was trained on: resize (the shortest edge,
or both sides), centre crop, rescale to [0, 1], normalise, as an NCHW float32 RGB
batch. The model's family reads them off its own image processor
(`BackboneFamily.preprocessing_settings`), down to the details that move a pixel: whether
the resize runs on the PIL image or on a uint8 tensor (`resize_on`), and how the crop
offset rounds (`crop_offset`). `SettingsProcessor` applies them, for
`medft predict --model model.onnx`; `check_settings` proves on test images that they
reproduce the processor, so an unusual processor is refused rather than mis-described.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional

from medft.errors import MedftError

PREPROCESSOR_NAME = "preprocessor.json"
ON_PIL, ON_TENSOR = "PIL image", "uint8 tensor"
# crop offset = (side - crop) / 2, rounded down (transformers) or half to even (torchvision)
FLOOR, HALF_EVEN = "floor", "round half to even"
PIXEL_TOLERANCE = 1e-4  # on normalised pixels: float rounding, not a moved or resampled pixel


def input_size(settings: dict[str, Any]) -> tuple[int, int]:
    """The height and width of the model's input, where the settings fix them."""
    fixed = settings["crop"] or settings["resize"] or {}
    if "height" not in fixed:
        raise MedftError(
            "the processor gives images of varying size (a shortest edge, no crop); "
            "export needs a fixed input size."
        )
    return fixed["height"], fixed["width"]


class SettingsProcessor:
    """Applies preprocessor.json's settings to RGB images: called as an image processor is."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.mean = torch.tensor(settings["mean"]).view(-1, 1, 1)
        self.std = torch.tensor(settings["std"]).view(-1, 1, 1)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        resize = self.settings["resize"]
        if "shortest_edge" not in resize:
            return resize["height"], resize["width"]
        edge = resize["shortest_edge"]
        if height <= width:
            return edge, int(edge * width / height)
        return int(edge * height / width), edge

    def offset(self, gap: int) -> int:
        """Where a crop starts: half the gap, rounded as the processor rounds it."""
        return gap // 2 if self.settings["crop_offset"] == FLOOR else int(round(gap / 2))

    def crop(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        crop = self.settings["crop"]
        top, left = self.offset(height - crop["height"]), self.offset(width - crop["width"])
        if top < 0 or left < 0:
            raise MedftError(
                f"a {height}x{width} image is smaller than the "
                f"{crop['height']}x{crop['width']} crop in preprocessor.json."
            )
        return pixels[..., top : top + crop["height"], left : left + crop["width"]]

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """One image as the model's (C, H, W) float32 input."""
        picture: Image.Image | torch.Tensor = image.convert("RGB")
        if self.settings["resize_on"] == ON_TENSOR:
            picture = functional.pil_to_tensor(picture)
        if self.settings["resize"]:
            height, width = (image.height, image.width)
            picture = functional.resize(
                picture,
                list(self.resized_size(height, width)),
                interpolation=InterpolationMode(self.settings["interpolation"]),
                antialias=True,
            )
        pixels = picture if isinstance(picture, torch.Tensor) else functional.pil_to_tensor(picture)
        if self.settings["crop"]:
            pixels = self.crop(pixels)
        pixels = pixels.float() * self.settings["rescale_factor"]
        return (pixels - self.mean) / self.std

    def __call__(self, images: Image.Image | list[Image.Image], return_tensors: str = "pt"):
        images = images if isinstance(images, list) else [images]
        return {"pixel_values": torch.stack([self.pixels(image) for image in images])}


def check_images() -> list[Image.Image]:
    """Odd-sized, landscape and portrait noise images: every resize and crop offset shows."""
    rng = np.random.default_rng(0)
    shapes = ((37, 53), (211, 300), (300, 211), (64, 64))
    return [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for shape in shapes]


def check_settings(settings: dict[str, Any], processor: Any) -> float:
    """The largest difference between the pixels the settings make and the processor's own
    (a MedftError above `PIXEL_TOLERANCE`: the settings would not reproduce the inputs)."""
    ours = SettingsProcessor(settings)
    worst = 0.0
    for image in check_images():
        theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
        made = ours.pixels(image)
        if made.shape != theirs.shape:
            raise MedftError(
                f"preprocessor.json would make {tuple(made.shape)} inputs where "
                f"{type(processor).__name__} makes {tuple(theirs.shape)}; this "
                "processor is not supported by export."
            )
        worst = max(worst, float((made - theirs).abs().max()))
    if worst > PIXEL_TOLERANCE:
        raise MedftError(
            f"preprocessor.json's settings differ from {type(processor).__name__}'s pixels by "
            f"{worst:.3g} (> {PIXEL_TOLERANCE}); this processor does something export cannot "
            "describe."
        )
    return worst
