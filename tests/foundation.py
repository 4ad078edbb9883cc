"""Medical and general foundation encoders as the Hub holds them, built offline with random
weights: each the real model type and structure (the checkpoint's base-model class, its image
processor, its card's licence front matter where the test needs one), with small hidden sizes
and inputs so that fine-tuning takes seconds.

- RAD-DINO (`microsoft/rad-dino`): a transformers `dinov2` base model, BitImageProcessor,
  card under `msrla`;
- CXformer (`m42-health/CXformer-base`): `dinov2_with_registers` (4 registers), no card;
- MedSigLIP (`google/medsiglip-448`): a whole `siglip` model (text and vision towers),
  SiglipImageProcessor, a gated card under the Health AI Developer Foundations terms;
- DINOv2 (`facebook/dinov2-small`): `dinov2`, card under apache-2.0;
- DINOv2 and DINOv3 in timm (`timm/vit_small_patch14_dinov2.lvd142m`,
  `timm/vit_small_patch16_dinov3.lvd1689m`): timm's own Hub export (`save_for_hf`), whose
  config's pretrained cfg names the licence;
- EVA-X (`MapleF/eva_x`): a state dict of timm's EVA-02 architecture at EVA-X's settings,
  saved as its masked-image-modelling checkpoint holds it (under ``model``, the pretraining's
  mask token and head, the final norm before pooling);
- DINOv3 in transformers (`dinov3_vit`), which transformers has no image classifier for.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import yaml
from timm.models._hub import save_for_hf
from transformers import (
    BitImageProcessor,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
SIDE = 56  # the processors' input: a 4x4 patch grid at patch size 14
RAD_DINO_ID = "microsoft/rad-dino"
RAD_DINO_CARD = {
    "license": "other",
    "license_name": "msrla",
    "license_link": "https://huggingface.co/microsoft/rad-dino/blob/main/LICENSE",
    "library_name": "transformers",
}
MEDSIGLIP_CARD = {
    "license": "other",
    "license_name": "health-ai-developer-foundations",
    "license_link": "https://developers.google.com/health-ai-developer-foundations/terms",
    "library_name": "transformers",
    "extra_gated_heading": "Access MedSigLIP on Hugging Face",
    "extra_gated_button_content": "Acknowledge license",
}
# EVA-X-S (hustvl/EVA-X eva_x.py) is timm's EVA-02 small at patch 16 on a 14x14 grid
EVA_X_ARCHITECTURE = "timm/eva02_small_patch14_224"
EVA_X_SETTINGS = {
    "patch_size": 16, "mlp_ratio": 4 * 2 / 3, "swiglu_mlp": True, "use_rot_pos_emb": True,
    "ref_feat_shape": [14, 14], "embed_dim": 32, "depth": 2, "num_heads": 2,
}  # fmt: skip


def write_card(folder: Path, front_matter: dict) -> None:
    text = f"---\n{yaml.safe_dump(front_matter, sort_keys=False)}---\n\n# Model card\n"
    (folder / "README.md").write_text(text)


def dino_processor(mean: list[float], std: list[float]) -> BitImageProcessor:
    """DINOv2's processor (resize the shorter side, centre crop), at SIDE pixels."""
    return BitImageProcessor(
        size={"shortest_edge": SIDE},
        crop_size={"height": SIDE, "width": SIDE},
        do_center_crop=True,
        image_mean=mean,
        image_std=std,
    )


def save_rad_dino(folder: Path) -> Path:
    torch.manual_seed(0)
    config = Dinov2Config(patch_size=14, image_size=518, layerscale_value=1.0, **SMALL)
    Dinov2Model(config).save_pretrained(folder)
    dino_processor([0.5307] * 3, [0.2583] * 3).save_pretrained(folder)
    write_card(folder, RAD_DINO_CARD)
    return folder


def save_cxformer(folder: Path) -> Path:
    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(
        patch_size=14, image_size=518, num_register_tokens=4, **SMALL
    )
    Dinov2WithRegistersModel(config).save_pretrained(folder)
    dino_processor([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def save_medsiglip(folder: Path) -> Path:
    torch.manual_seed(0)
    text = {**SMALL, "num_hidden_layers": 1, "vocab_size": 64}
    config = SiglipConfig(
        vision_config={**SMALL, "image_size": SIDE, "patch_size": 14}, text_config=text
    )
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": SIDE, "width": SIDE}).save_pretrained(folder)
    write_card(folder, MEDSIGLIP_CARD)
    return folder


def save_dinov2(folder: Path) -> Path:
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(patch_size=14, image_size=518, **SMALL)).save_pretrained(folder)
    dino_processor([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).save_pretrained(folder)
    write_card(folder, {"license": "apache-2.0", "library_name": "transformers"})
    return folder


def save_timm_export(folder: Path, name: str, img_size: int) -> Path:
    """timm's ``name`` (no classifier, as its Hub checkpoint) in timm's Hub layout."""
    torch.manual_seed(0)
    model = timm.create_model(
        name, pretrained=False, embed_dim=32, depth=2, num_heads=2, img_size=img_size
    )
    save_for_hf(model, folder, safe_serialization=True)
    return folder


def save_timm_dinov2(folder: Path) -> Path:
    return save_timm_export(folder, "vit_small_patch14_dinov2.lvd142m", SIDE)


def save_timm_dinov3(folder: Path) -> Path:
    return save_timm_export(folder, "vit_small_patch16_dinov3.lvd1689m", 64)


def save_eva_x_checkpoint(path: Path) -> Path:
    """EVA-X's masked-image-modelling checkpoint layout: the encoder under ``model``, its
    final norm before pooling, the pretraining's mask token and head, no rotary buffers."""
    torch.manual_seed(0)
    settings = {**EVA_X_SETTINGS, "ref_feat_shape": tuple(EVA_X_SETTINGS["ref_feat_shape"])}
    encoder = timm.create_model(
        EVA_X_ARCHITECTURE.removeprefix("timm/"),
        pretrained=False,
        num_classes=0,
        use_fc_norm=False,
        **settings,
    )
    state = {key: value for key, value in encoder.state_dict().items() if "rope" not in key}
    state |= {
        "mask_token": torch.zeros(1, 1, 32),
        "lm_head.weight": torch.zeros(8, 32),
        "lm_head.bias": torch.zeros(8),
    }
    torch.save({"model": state}, path)
    return path


def save_transformers_dinov3(folder: Path) -> Path:
    DINOv3ViTModel(DINOv3ViTConfig(patch_size=16, **SMALL)).save_pretrained(folder)
    return folder
