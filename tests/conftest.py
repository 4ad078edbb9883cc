"""Shared fixtures: generated datasets in the real on-disk layouts, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from medft.config.prepare import BrainTumorArguments, ChestXray14Arguments
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_brain_tumor_44c, synthesize_chestxray14

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def brain_raw(tmp_path_factory) -> Path:
    """The 44 class folders with 6 scans each, quirks and three bad files."""
    root = tmp_path_factory.mktemp("brain_raw")
    return synthesize_brain_tumor_44c(root, per_class=6, image_size=40, include_bad_files=True)


@pytest.fixture(scope="session")
def brain_multiclass(brain_raw, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "brain44"
    prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, num_proc=2))
    return output


@pytest.fixture(scope="session")
def brain_binary(brain_raw, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "brain2"
    prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, task="binary", num_proc=1))
    return output


@pytest.fixture(scope="session")
def nih_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nih_raw")
    return synthesize_chestxray14(root, n_patients=30, image_size=48)


@pytest.fixture(scope="session")
def nih_prepared(nih_raw, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "cxr14"
    prepare_dataset(ChestXray14Arguments(output=output, source=nih_raw, num_proc=1))
    return output


@pytest.fixture(scope="session")
def pretrained_folders(tmp_path_factory) -> dict[str, Path]:
    """Folders with a 1000-class ImageNet head, one per way users hold pretrained weights."""
    from tests import pretrained

    root = tmp_path_factory.mktemp("pretrained")
    return {
        "timm_wrapper": pretrained.save_timm_wrapper(root / "timm_wrapper"),
        "timm_hub_export": pretrained.save_timm_hub_export(root / "timm_hub_export"),
        "vit": pretrained.save_vit(root / "vit"),
    }


@pytest.fixture
def offline_hub(pretrained_folders, tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache holding the timm export and the ViT under Hub ids, read offline:
    `from_pretrained(hub_id)` runs its Hub code path without a network."""
    import huggingface_hub.constants

    from tests import pretrained

    cache = tmp_path / "hub"
    for hub_id, folder in (
        (pretrained.TIMM_HUB_ID, "timm_hub_export"),
        (pretrained.VIT_HUB_ID, "vit"),
    ):
        pretrained.add_to_hub_cache(cache, hub_id, pretrained_folders[folder])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory) -> Path:
    """Real ImageNet EfficientNet-Lite0 weights in timm's names (a safetensors file)."""
    from benchmarks.lite0_weights import lite0_weights_file

    return lite0_weights_file(tmp_path_factory.mktemp("lite0") / "lite0.safetensors")


@pytest.fixture(scope="session")
def trained_binary(brain_binary, tmp_path_factory) -> Path:
    """A two-layer ViT trained for one epoch on the binary brain data, as `medft train` saves
    it (with metrics.json, thresholds.json and the plots of the evaluation after training)."""
    from tests.helpers import run_recipe

    output = tmp_path_factory.mktemp("trained") / "binary_vit"
    run_recipe("tiny_vit.yaml", brain_binary, output)
    return output


@pytest.fixture(scope="session")
def trained_multilabel(nih_prepared, tmp_path_factory) -> Path:
    """timm's ResNet-18 trained for one epoch on the generated NIH data."""
    from tests.helpers import run_recipe

    output = tmp_path_factory.mktemp("trained") / "multilabel_resnet"
    run_recipe("tiny_timm.yaml", nih_prepared, output)
    return output
