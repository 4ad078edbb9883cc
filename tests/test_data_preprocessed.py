"""The validation split preprocessed once: kept bit for bit, in uint8 only where exact."""

import logging

import pytest
import torch
from datasets import Dataset

from medft.config import MedftTrainingArguments
from medft.data.preprocessed import preprocess_once, rescaled_then_normalized
from medft.data.transforms import InputSpec
from medft.errors import MedftError

SPEC = InputSpec(size=(4, 4), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
MEAN, STD = (torch.tensor(v).view(1, -1, 1, 1) for v in (SPEC.mean, SPEC.std))


def split_of(pixels: torch.Tensor) -> Dataset:
    """Rows whose transform gives ``pixels[row]`` and label ``row % 3``."""
    rows = Dataset.from_dict({"row": list(range(len(pixels)))})

    def transform(batch):
        return {
            "pixel_values": [pixels[row] for row in batch["row"]],
            "labels": [torch.tensor(row % 3) for row in batch["row"]],
        }

    rows.set_transform(transform)
    return rows


def kept(pixels: torch.Tensor, budget_gb: float = 1.0):
    return preprocess_once(
        split_of(pixels), SPEC, name="Validation", batch_size=4, workers=0, budget_gb=budget_gb
    )


def uint8_images(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, 3, 4, 4), dtype=torch.uint8, generator=generator)


def test_exact_uint8_outputs_are_kept_as_uint8_and_given_back_bit_for_bit():
    pixels = rescaled_then_normalized(uint8_images(10), MEAN, STD)
    split = kept(pixels)
    assert split.pixels.dtype == torch.uint8 and len(split) == 10
    batch = split.__getitems__([7, 2, 9])
    assert torch.equal(torch.stack([row["pixel_values"] for row in batch]), pixels[[7, 2, 9]])
    assert [row["labels"].item() for row in batch] == [1, 2, 0]


def test_a_batch_off_the_uint8_grid_keeps_the_whole_split_as_float32_bit_for_bit():
    pixels = rescaled_then_normalized(uint8_images(10), MEAN, STD)
    pixels[5:] += 1e-3  # the second batch of four is not uint8 after any decoding
    split = kept(pixels)
    assert split.pixels.dtype == torch.float32
    assert torch.equal(torch.stack([split[row]["pixel_values"] for row in range(10)]), pixels)


def test_a_split_over_the_budget_is_not_kept_and_the_log_says_so(caplog):
    pixels = rescaled_then_normalized(uint8_images(10), MEAN, STD)
    with caplog.at_level(logging.INFO, logger="medft"):
        assert kept(pixels, budget_gb=100 / 2**30) is None  # 480 bytes in uint8
    assert "not kept in memory" in caplog.text and "raise eval_cache_gb" in caplog.text
    assert kept(pixels, budget_gb=480 / 2**30) is not None


def test_the_budget_must_not_be_negative(tmp_path):
    with pytest.raises(MedftError, match="eval_cache_gb must be >= 0"):
        MedftTrainingArguments(output_dir=str(tmp_path), eval_cache_gb=-1)
