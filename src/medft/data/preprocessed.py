"""An evaluation split preprocessed once and kept in memory: the model's processor is
deterministic, so the validation split, scored every epoch and again after training, need
not be decoded and preprocessed each time.

The pixels are kept as uint8 where the processor's output is, bit for bit, its own
arithmetic on uint8 values (`InputSpec.rescale_fused`, read off the processor by its family;
checked on every batch): processors resize uint8 images, then rescale and normalise them,
so this is the usual case and takes a quarter of
float32's memory (the NIH validation split at 224 px: 1.3 GB rather than 5.3 GB). Any other
output is kept as float32. A split that would take more than the budget is not kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import datasets
import torch
from torch.utils.data import DataLoader, Dataset

from medft.data.transforms import InputSpec, collate

logger = logging.getLogger("medft")
Decoding = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rescaled_then_normalized(
    pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """x / 255, then normalised: torchvision's ToTensor and Normalize."""
    return pixels.float().div_(255).sub_(mean).div_(std)


def fused_normalized(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The rescale fused into the normalisation (mean and std times 255)."""
    return pixels.float().sub_(mean * 255).div_(std * 255)


class PreprocessedSplit(Dataset):
    """A split's model inputs as its transform made them; ``pixels`` uint8 or float32."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, decode=None) -> None:
        self.pixels, self.labels, self.decode = pixels, labels, decode

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([row])[0]

    def __getitems__(self, rows: list[int]) -> list[dict[str, torch.Tensor]]:
        pixels = self.pixels[rows]
        pixels = self.decode(pixels) if self.decode else pixels
        return [{"pixel_values": p, "labels": label} for p, label in zip(pixels, self.labels[rows])]


class Uint8Form:
    """Encodes float batches as uint8 while the processor's own arithmetic (``spec``'s) gives
    them back bit for bit."""

    def __init__(self, spec: InputSpec) -> None:
        self.mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std).view(1, -1, 1, 1)
        self.decoding: Decoding = (
            fused_normalized if spec.rescale_fused else rescaled_then_normalized
        )

    def encode(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """``pixels`` as uint8, or None when decoding does not give this batch back."""
        encoded = (pixels * self.std + self.mean).mul_(255).round_().clamp_(0, 255).byte()
        return encoded if torch.equal(self.decode(encoded), pixels) else None

    def decode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decoding(pixels, self.mean, self.std)


def preprocess_once(
    split: datasets.Dataset,
    spec: InputSpec | None,
    *,
    name: str,
    batch_size: int,
    workers: int,
    budget_gb: float,
) -> PreprocessedSplit | None:
    """``split`` through its transform once, in batches in the loader workers; None (logged)
    when it would take more than ``budget_gb``."""
    form = Uint8Form(spec) if spec is not None else None
    pixels = labels = None
    done = 0
    for batch in DataLoader(split, batch_size=batch_size, num_workers=workers, collate_fn=collate):
        values, targets = batch["pixel_values"], batch["labels"]
        if labels is None:
            labels = targets.new_empty((len(split), *targets.shape[1:]))
        still_uint8 = form is not None and (pixels is None or pixels.dtype == torch.uint8)
        encoded = form.encode(values) if still_uint8 else None
        dtype = values.dtype if encoded is None else torch.uint8
        if pixels is None or pixels.dtype != dtype:  # the first batch, or one not exact in uint8
            shape = (len(split), *values.shape[1:])
            if not fits(shape, dtype, name, budget_gb):
                return None
            earlier = form.decode(pixels[:done]) if pixels is not None else None
            pixels = torch.empty(shape, dtype=dtype)
            if earlier is not None:
                pixels[:done] = earlier
        pixels[done : done + len(values)] = values if encoded is None else encoded
        labels[done : done + len(values)] = targets
        done += len(values)
    logger.info(
        "%s: %d images preprocessed once, kept in memory as %s (%.0f MB)",
        name,
        len(pixels),
        pixels.dtype,
        pixels.nbytes / 2**20,
    )
    return PreprocessedSplit(pixels, labels, form.decode if pixels.dtype == torch.uint8 else None)


def fits(shape: tuple[int, ...], dtype: torch.dtype, name: str, budget_gb: float) -> bool:
    size = torch.Size(shape).numel() * dtype.itemsize
    if size <= budget_gb * 2**30:
        return True
    logger.info(
        "%s: not kept in memory (%.1f GB as %s > eval_cache_gb %g): each evaluation "
        "preprocesses it again; raise eval_cache_gb to keep it.",
        name,
        size / 2**30,
        dtype,
        budget_gb,
    )
    return False
