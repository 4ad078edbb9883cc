"""Image transforms for training and evaluation, built from the model's own image processor.

Evaluation runs the processor itself, the very preprocessing that
`pipeline("image-classification")` applies to the saved model, so validation
and test numbers are what users will get. Training uses torchvision v2 with the
processor's input size, mean, std and interpolation, plus the augmentations of
the recipe (`DataArguments`), in two halves: loader workers decode and augment on
uint8 (`train_transform`; with `data_cache`, `BatchAugment` does the same to images held
in memory), the training device converts, normalises and erases whole batches
(`DeviceTransform`). Greyscale scans become three identical channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from medft.config import DataArguments
from medft.formats.dicom_settings import DicomSettings
from medft.formats.windowing import to_model_image
from medft.tasks import TaskInfo


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: input height and width, normalisation, resampling, as its
    family reads them off its processor (`BackboneFamily.input_spec`)."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: InterpolationMode = InterpolationMode.BICUBIC
    # how the processor's float pixels come from uint8 ones: x / 255, then normalised
    # (torchvision's ToTensor and Normalize), or with the rescale fused into the normalisation
    # (mean and std times 255, as transformers' torchvision processors compute it)
    rescale_fused: bool = False


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
    """What a loader worker does to a training image: a random crop at the model's input size
    and the recipe's geometric and colour augmentations, all on uint8 pixels (as RandAugment
    expects). Batches leave the workers as uint8, a quarter of float32's bytes; the float
    half (`DeviceTransform`) runs on the training device."""
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
    return v2.Compose(steps)


class DeviceTransform:
    """The float half of training preprocessing, on a whole uint8 batch where it lies (the
    GPU in training): scale to [0, 1], normalise with the model's mean and std, and random
    erasing last, on normalised values, one rectangle per image (timm's `RandomErasing`)."""

    def __init__(self, spec: InputSpec, random_erasing: float = 0.0) -> None:
        self.spec, self.random_erasing = spec, random_erasing
        self.by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor, Any]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Any]:
        if device not in self.by_device:
            mean = torch.tensor(self.spec.mean, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.spec.std, device=device).view(1, -1, 1, 1)
            erase = None
            if self.random_erasing:
                erase = RandomErasing(self.random_erasing, mode="const", device=str(device))
            self.by_device[device] = (mean, std, erase)
        return self.by_device[device]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, std, erase = self.on(pixels.device)
        pixels = (pixels.float().div_(255) - mean).div_(std)
        return erase(pixels) if erase is not None else pixels


def use_one_thread_in_workers() -> None:
    """Inside a loader worker, one intra-op thread: workers are processes already, and each
    running torch's default of one thread per core oversubscribes the CPU (the kernel time
    of 2-core runs). A no-op in the main process."""
    if torch.utils.data.get_worker_info() is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


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
        use_one_thread_in_workers()
        images = [to_rgb(image, dicom) for image in batch[task.image_column]]
        labels = [task.target(value) for value in batch[task.label_column]]
        return {"pixel_values": list(pixels(images)), "labels": labels}

    return transform


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }
