"""Foundation encoders through medft's routes (a Hub id, a local folder, `timm/<arch>` with a
weights file), offline: each built as the Hub holds it (`tests.foundation`), fine-tuned a few
steps by `train()`, served by plain `pipeline()`, explained by Grad-CAM, with its licence and
preprocessing in the card; LoRA targets and frozen blocks resolve for each."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, pipeline

from medft.commands.explain import explain
from medft.config import ModelArguments
from medft.config.inference import ExplainArguments
from medft.data.loading import load_training_data
from medft.errors import MedftError
from medft.modeling import build_model
from medft.modeling.licence import base_licence, from_front_matter
from tests import foundation
from tests.helpers import FINDINGS, THREE, run_recipe
from tests.pretrained import CACHE_COMMIT, add_to_hub_cache

HUB, FOLDER, WEIGHTS_FILE = "Hub id", "local folder", "timm/<arch> + weights file"
DINO_PATCHES = "embeddings.patch_embeddings.projection.weight"
TIMM_PATCHES = "patch_embed.proj.weight"


@dataclass(frozen=True)
class Encoder:
    """One foundation encoder: how it is saved, the route a recipe takes to it, the dataset it
    is fine-tuned on, and what must resolve and be said of it."""

    save: Callable[[Path], Path]
    route: str
    dataset: str  # a conftest fixture
    lora_targets: set[str]
    patch_weights: tuple[str, str]  # its patch embedding: in the fine-tuned model, in the file
    card: list[str] = field(default_factory=list)  # what the card says of its licence


def dino(prefix: str) -> tuple[str, str]:
    return f"{prefix}.{DINO_PATCHES}", DINO_PATCHES


TIMM = (f"timm_model.{TIMM_PATCHES}", TIMM_PATCHES)
ENCODERS = {
    "rad_dino": Encoder(
        foundation.save_rad_dino, HUB, "nih_prepared", {"q_proj", "v_proj"}, dino("dinov2"),
        ["**Non-commercial use only.** `msrla`", "license_name: msrla",
         "(https://huggingface.co/microsoft/rad-dino/blob/main/LICENSE)"],
    ),
    "cxformer": Encoder(
        foundation.save_cxformer, FOLDER, "nih_prepared", {"q_proj", "v_proj"},
        dino("dinov2_with_registers"),
    ),
    "medsiglip": Encoder(
        foundation.save_medsiglip, FOLDER, "brain_binary", {"q_proj", "v_proj"},
        ("vision_model.embeddings.patch_embedding.weight",) * 2,
        ["**Terms of its own.** `health-ai-developer-foundations`", "**Gated.**",
         "license_name: health-ai-developer-foundations"],
    ),
    "dinov2": Encoder(
        foundation.save_dinov2, FOLDER, "brain_binary", {"q_proj", "v_proj"}, dino("dinov2"),
        ["come under `apache-2.0`", "license: apache-2.0"],
    ),
    "timm_dinov2": Encoder(
        foundation.save_timm_dinov2, FOLDER, "brain_binary", {"qkv"}, TIMM,
        ["come under `apache-2.0`"],
    ),
    "timm_dinov3": Encoder(
        foundation.save_timm_dinov3, FOLDER, "brain_binary", {"qkv"}, TIMM,
        ["**Terms of its own.** `dinov3-license`", "license: other"],
    ),
    "eva_x": Encoder(
        foundation.save_eva_x_checkpoint, WEIGHTS_FILE, "brain_binary", {"qkv"}, TIMM
    ),
}  # fmt: skip


def saved(name: str, root: Path) -> Path:
    return ENCODERS[name].save(root / (f"{name}.pth" if name == "eva_x" else name))


def model_settings(name: str, path: Path) -> dict:
    """The recipe's model keys for the encoder saved at ``path`` (a Hub id once cached)."""
    if ENCODERS[name].route == WEIGHTS_FILE:
        return {
            "model_name_or_path": foundation.EVA_X_ARCHITECTURE,
            "pretrained_weights": str(path),
            "config_overrides": foundation.EVA_X_SETTINGS,
        }
    return {"model_name_or_path": str(path)}


def file_tensor(path: Path, key: str) -> torch.Tensor:
    if path.is_dir():
        return load_file(str(path / "model.safetensors"))[key]
    return torch.load(path, weights_only=True)["model"][key]


def served_offline(monkeypatch, cache: Path, hub_id: str, folder: Path) -> str:
    add_to_hub_cache(cache, hub_id, folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return hub_id


@pytest.mark.parametrize("name", ENCODERS)
def test_a_foundation_encoder_fine_tunes_serves_and_explains(name, request, tmp_path, monkeypatch):
    encoder = ENCODERS[name]
    dataset = request.getfixturevalue(encoder.dataset)
    path = saved(name, tmp_path)
    settings = model_settings(name, path)
    if encoder.route == HUB:
        settings["model_name_or_path"] = served_offline(
            monkeypatch, tmp_path / "hub", foundation.RAD_DINO_ID, path
        )
    overrides = [f"--{key}={json.dumps(value) if isinstance(value, dict) else value}"
                 for key, value in settings.items()]  # fmt: skip
    output = tmp_path / "model"
    run_recipe("pretrained.yaml", dataset, output, *overrides, "--freeze", "backbone",
               "--max_train_samples", "32", "--bootstrap_resamples", "0")  # fmt: skip

    tuned, stored = encoder.patch_weights
    reloaded = AutoModelForImageClassification.from_pretrained(output)
    assert torch.equal(reloaded.get_parameter(tuned), file_tensor(path, stored))  # frozen
    _, task = load_training_data(str(dataset))
    scan = tmp_path / "scan.png"
    Image.new("L", (48, 48), 90).save(scan)
    classifier = pipeline("image-classification", model=str(output))
    scores = classifier(str(scan), top_k=len(task.label_names))
    assert {score["label"] for score in scores} == set(task.label_names)

    summary = explain(
        ExplainArguments(model=output, images=[scan], output=tmp_path / "cam", progress=False)
    )
    assert summary.method.startswith("Grad-CAM on the patch-token grid of ")
    assert len(summary.written) == 1

    card = (output / "README.md").read_text()
    assert "Preprocessing (the saved image processor, which `pipeline()` runs): " in card
    assert ("## Licence of the base model" in card) == bool(encoder.card)
    for words in encoder.card:
        assert words in card
    assert str(tmp_path) not in card


@pytest.mark.parametrize("name", ENCODERS)
def test_lora_targets_and_frozen_blocks_resolve_for_each_encoder(name, tmp_path):
    settings = model_settings(name, saved(name, tmp_path))
    lora = build_model(ModelArguments(**settings, lora_r=4), THREE)
    assert set(lora.model.peft_config["default"].target_modules) == ENCODERS[name].lora_targets
    built = build_model(ModelArguments(**settings, freeze="partial", unfreeze_last_n=1), FINDINGS)
    layout, parameters = built.layout, dict(built.model.named_parameters())
    assert len(layout.blocks) == 2  # the encoder's layers, as small as the test makes them
    (_, first), (_, last) = layout.blocks
    assert not any(parameters[name].requires_grad for name in first)
    assert all(parameters[name].requires_grad for name in last + layout.head)
    assert layout.head_module.rsplit(".", 1)[-1] in ("classifier", "head")


def test_dinov3_in_transformers_is_refused_with_its_timm_port(tmp_path):
    folder = foundation.save_transformers_dinov3(tmp_path / "dinov3")
    for args in (ModelArguments(str(folder)), ModelArguments("dinov3_vit", pretrained=False)):
        with pytest.raises(MedftError) as error:
            build_model(args, THREE)
        message = str(error.value)
        assert "transformers has no image classifier for" in message and "\n" not in message
        assert "use its timm port, timm/vit_base_patch16_dinov3.lvd1689m" in message


def test_the_licence_is_read_from_the_card_else_the_config(tmp_path, monkeypatch):
    folder = tmp_path / "local"
    folder.mkdir()
    foundation.write_card(folder, {"license": "other", "license_name": "msrla",
                                   "license_link": "LICENSE"})  # fmt: skip
    licence = base_licence(ModelArguments(str(folder)), None)
    assert (licence.name, licence.license_link, licence.gated) == ("msrla", None, False)
    hub = from_front_matter({"license": "other", "license_name": "msrla",
                             "license_link": "./LICENSE"}, "microsoft/rad-dino")  # fmt: skip
    assert hub.license_link == "https://huggingface.co/microsoft/rad-dino/blob/main/LICENSE"
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\n")  # front matter not YAML
    assert base_licence(ModelArguments(str(folder)), "apache-2.0").card_data() == {
        "license": "apache-2.0"
    }
    assert base_licence(ModelArguments(str(folder)), "dinov3-license").card_data() == {
        "license": "other",
        "license_name": "dinov3-license",
    }
    assert base_licence(ModelArguments("vit", pretrained=False), "mit") is None  # no weights
    offline = served_offline(monkeypatch, tmp_path / "hub", "someone/no-card", folder)
    snapshot = tmp_path / "hub" / "models--someone--no-card" / "snapshots" / CACHE_COMMIT
    (snapshot / "README.md").unlink()
    assert base_licence(ModelArguments(offline), None) is None
