"""Image transforms for training and evaluation, built from the model's own image processor.

Evaluation runs the processor itself, the very preprocessing that
`pipeline("image-classification")` applies to the saved model, so validation
and test numbers are what users will get. Training uses torchvision v2 with the
processor's input size, mean, std and interpolation, plus the augmentations of
the recipe (`DataArguments`). Greyscale scans become three identical channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from medft.config import DataArguments
from medft.dicom import to_model_image
from medft.dicom_settings import DicomSettings
from medft.tasks import TaskInfo

PIL_TO_TORCHVISION = {
    Image.Resampling.NEAREST: InterpolationMode.NEAREST,
    Image.Resampling.BILINEAR: InterpolationMode.BILINEAR,
    Image.Resampling.BICUBIC: InterpolationMode.BICUBIC,
    Image.Resampling.LANCZOS: InterpolationMode.LANCZOS,
    Image.Resampling.BOX: InterpolationMode.BOX,
    Image.Resampling.HAMMING: InterpolationMode.HAMMING,
}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: input height and width, normalisation, resampling."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: InterpolationMode = InterpolationMode.BICUBIC


def input_spec(processor: Any) -> InputSpec:
    """The input a transformers or timm (`TimmWrapperImageProcessor`) processor produces."""
    if hasattr(processor, "data_config"):  # timm
        config = processor.data_config
        return InputSpec(
            size=tuple(config["input_size"][1:]),
            mean=tuple(config["mean"]),
            std=tuple(config["std"]),
            interpolation=InterpolationMode(config.get("interpolation", "bicubic")),
        )
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    if size.get("height"):
        height, width = size["height"], size["width"]
    else:
        height = width = size["shortest_edge"]
    resample = Image.Resampling(int(getattr(processor, "resample", Image.Resampling.BICUBIC)))
    return InputSpec(
        size=(height, width),
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
        interpolation=PIL_TO_TORCHVISION[resample],
    )


def to_picture(pixels: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """A normalised CHW tensor back to the HWC image in [0, 1] that the model saw."""
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (pixels.detach().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def to_rgb(image: Image.Image, dicom: DicomSettings | None = None) -> Image.Image:
    """RGB for the processor: a 16-bit image windowed first (``dicom``: a 16-bit DICOM
    dataset's settings; otherwise by its own range), since converting it would clip."""
    image = to_model_image(image, dicom)
    return image if image.mode == "RGB" else image.convert("RGB")


def train_transform(spec: InputSpec, augment: DataArguments) -> v2.Compose:
    """Random crop at the model's input size, the augmentations the recipe asks for, normalise.

    Geometric and colour changes work on uint8 pixels (as RandAugment expects);
    random erasing comes last, on normalised values, as in timm.
    """
    steps: list[v2.Transform] = [
        v2.PILToTensor(),
        v2.RandomResizedCrop(
            spec.size,
            scale=tuple(augment.crop_scale),
            ratio=tuple(augment.crop_ratio),
            interpolation=spec.interpolation,
        ),
    ]
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip(augment.horizontal_flip))
    if augment.vertical_flip:
        steps.append(v2.RandomVerticalFlip(augment.vertical_flip))
    if augment.rotation_degrees or augment.zoom:
        zoom = (1 - augment.zoom, 1 + augment.zoom) if augment.zoom else None
        steps.append(v2.RandomAffine(degrees=augment.rotation_degrees, scale=zoom))
    if augment.brightness or augment.contrast:
        steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast))
    if augment.auto_augment == "randaugment":
        steps.append(v2.RandAugment(magnitude=augment.randaugment_magnitude))
    elif augment.auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    if augment.random_erasing:
        steps.append(v2.RandomErasing(augment.random_erasing))
    return v2.Compose(steps)


def eval_pixels(processor: Any) -> Callable[[list[Image.Image]], torch.Tensor]:
    """The processor's own preprocessing, as used by `pipeline()`, on a list of images."""

    def pixels(images: list[Image.Image]) -> torch.Tensor:
        return processor(images=images, return_tensors="pt")["pixel_values"]

    return pixels


def train_pixels(
    spec: InputSpec, augment: DataArguments
) -> Callable[[list[Image.Image]], list[torch.Tensor]]:
    """Each image augmented on its own (one tensor per image; `collate` stacks the batch)."""
    transform = train_transform(spec, augment)

    def pixels(images: list[Image.Image]) -> list[torch.Tensor]:
        return [transform(image) for image in images]

    return pixels


def batch_transform(
    pixels: Callable[[list[Image.Image]], torch.Tensor | list[torch.Tensor]],
    task: TaskInfo,
    dicom: DicomSettings | None = None,
) -> Callable[[dict[str, list]], dict[str, Any]]:
    """A `Dataset.with_transform` function: image and label columns -> model inputs."""

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        images = [to_rgb(image, dicom) for image in batch[task.image_column]]
        labels = [task.target(value) for value in batch[task.label_column]]
        return {"pixel_values": list(pixels(images)), "labels": labels}

    return transform


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }
