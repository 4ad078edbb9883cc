import pytest
import torch
from PIL import Image

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.modeling.backbones import build_backbone
from medft.modeling.families import base_model_id, family_of
from medft.tasks import TaskInfo

TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 8,
}
THREE = TaskInfo(["benign", "malignant", "normal"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")


def tiny_vit(**extra):
    return ModelArguments(
        "vit", pretrained=False, config_overrides=TINY_VIT, image_size=32, **extra
    )


def forward(model, processor, size=(50, 40)):
    inputs = processor(images=[Image.new("RGB", size)], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def test_transformers_model_from_a_model_type_carries_the_labels():
    model, processor = build_backbone(tiny_vit(), THREE)
    assert model.config.id2label == {0: "benign", 1: "malignant", 2: "normal"}
    assert model.config.label2id["normal"] == 2
    assert model.config.problem_type == "single_label_classification"
    assert family_of(processor).input_spec(processor).size == (32, 32)
    assert forward(model, processor).shape == (1, 3)


def test_convnext_type_with_a_small_input():
    args = ModelArguments(
        "convnext",
        pretrained=False,
        config_overrides={"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]},
        image_size=48,
    )
    model, processor = build_backbone(args, FINDINGS)
    assert model.config.problem_type == "multi_label_classification"
    assert family_of(processor).input_spec(processor).size == (48, 48)
    assert forward(model, processor).shape == (1, 2)


def test_timm_model_keeps_timms_own_initialisation():
    args = ModelArguments("timm/resnet18", pretrained=False, image_size=40)
    model, processor = build_backbone(args, THREE)
    timm_model = model.timm_model
    assert model.config.architecture == "resnet18"
    assert model.config.pretrained_cfg["input_size"] == (3, 40, 40)
    assert family_of(processor).input_spec(processor).size == (40, 40)
    assert timm_model.layer1[0].bn2.weight.abs().sum() == 0  # timm zeroes a block's last BN
    assert timm_model.layer1[0].conv1.weight.std() > 0.04  # Kaiming, not normal(0, 0.02)
    assert forward(model, processor).shape == (1, 3)


def test_timm_vit_follows_the_image_size():
    args = ModelArguments(
        "timm/vit_tiny_patch16_224", pretrained=False, image_size=32, config_overrides={"depth": 1}
    )
    model, processor = build_backbone(args, THREE)
    assert model.config.model_args == {"depth": 1, "img_size": 32}
    assert forward(model, processor).shape == (1, 3)


def test_a_local_folder_loads_pretrained_weights_with_a_new_head(tmp_path):
    model, processor = build_backbone(tiny_vit(), THREE)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, _ = build_backbone(ModelArguments(str(tmp_path)), FINDINGS)
    assert reloaded.config.id2label == {0: "Mass", 1: "Nodule"}
    assert torch.equal(
        reloaded.vit.embeddings.patch_embeddings.projection.weight,
        model.vit.embeddings.patch_embeddings.projection.weight,
    )
    with pytest.raises(MedftError, match="image_size 64 differs from the 32"):
        build_backbone(ModelArguments(str(tmp_path), image_size=64), FINDINGS)


def test_user_mistakes_are_clear():
    with pytest.raises(MedftError, match="'vit' is a model type, which has no weights"):
        build_backbone(ModelArguments("vit"), THREE)
    with pytest.raises(MedftError, match="did you mean 'timm/resnet50'"):
        build_backbone(ModelArguments("timm/resnet5O", pretrained=False), THREE)
    with pytest.raises(MedftError, match="'no_such_tag' is not a pretrained tag.*a1_in1k"):
        build_backbone(ModelArguments("timm/resnet18.no_such_tag"), THREE)


def test_base_model_for_the_card():
    assert base_model_id(ModelArguments("timm/resnet50")) == "timm/resnet50.a1_in1k"
    assert base_model_id(ModelArguments("google/vit-base-patch16-224-in21k")) == (
        "google/vit-base-patch16-224-in21k"
    )
    assert base_model_id(tiny_vit()) is None
