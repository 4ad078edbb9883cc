import json

import pytest
import torch
from peft import PeftModel
from PIL import Image
from torch import nn
from transformers import AutoModelForImageClassification, pipeline, set_seed

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.modeling import build_model
from medft.modeling.lora import merged
from medft.tasks import TaskInfo
from tests.helpers import THREE, lora_vit_with_adapters, run_recipe, tiny_timm, tiny_vit

BINARY = TaskInfo(["normal", "tumor"], multi_label=False)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_lora(layer: nn.Linear, r: int) -> int:
    return r * (layer.in_features + layer.out_features)


def conv_lora(layer: nn.Conv2d, r: int) -> int:
    kernel = layer.kernel_size[0] * layer.kernel_size[1]
    return r * layer.in_channels * kernel + layer.out_channels * r  # A: in x k x k -> r; B: 1x1


def test_vit_lora_adapts_query_and_value_projections_and_trains_the_head():
    r = 4
    plain = build_model(tiny_vit(), THREE).model
    built = build_model(tiny_vit(lora_r=r), THREE)
    expected = sum(
        linear_lora(module, r)
        for name, module in plain.named_modules()
        if name.endswith(("q_proj", "v_proj")) and isinstance(module, nn.Linear)
    )
    head = sum(p.numel() for p in plain.classifier.parameters())
    assert expected == 2 * 2 * r * (32 + 32)  # 2 layers x query, value x r (in + out)
    assert count_trainable(built.model) == expected + head


def test_timm_vit_lora_adapts_qkv():
    r = 2
    args = tiny_timm("timm/vit_tiny_patch16_224", config_overrides={"depth": 2}, lora_r=r)
    built = build_model(args, THREE)
    qkv = built.model.base_model.model.timm_model.blocks[0].attn.qkv.base_layer
    head = built.model.base_model.model.timm_model.head.original_module
    expected = 2 * linear_lora(qkv, r) + sum(p.numel() for p in head.parameters())
    assert count_trainable(built.model) == expected


def test_cnn_lora_adapts_the_convolutions():
    r = 2
    plain = build_model(tiny_timm(), THREE).model
    convs = [m for n, m in plain.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    head = sum(p.numel() for p in plain.timm_model.fc.parameters())
    built = build_model(tiny_timm(lora_r=r), THREE)
    assert count_trainable(built.model) == sum(conv_lora(c, r) for c in convs) + head


def test_merged_model_loads_in_pipeline_with_the_same_logits(tmp_path):
    built = lora_vit_with_adapters()
    built.model.eval()
    pixels = built.processor(
        images=[Image.new("RGB", (40, 40), (90, 30, 200))], return_tensors="pt"
    )
    with torch.no_grad():
        adapted = built.model(**pixels).logits
    merged(built.model).save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path))
    assert not isinstance(classifier.model, PeftModel)
    with torch.no_grad():
        served = classifier.model(**pixels).logits
    assert torch.allclose(adapted, served, atol=1e-5)


def test_lora_training_keeps_the_best_epoch_and_saves_a_merged_model(brain_binary, tmp_path):
    output = tmp_path / "model"
    run_recipe("tiny_vit.yaml", brain_binary, output, "--lora_r", "4", "--num_train_epochs", "2",
               "--learning_rate", "0.01")  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    best_checkpoint = output / state["best_model_checkpoint"]
    set_seed(42)
    base = build_model(tiny_vit(), BINARY).model
    from_best = merged(PeftModel.from_pretrained(base, best_checkpoint))
    saved = AutoModelForImageClassification.from_pretrained(output).state_dict()
    for name, value in from_best.state_dict().items():
        assert torch.allclose(saved[name], value, atol=1e-6), name
    assert not (output / "adapter_config.json").exists()
    assert AutoModelForImageClassification.from_pretrained(output).config.id2label[1] == "tumor"


def test_adapter_only_output_loads_with_peft(brain_binary, tmp_path):
    output = tmp_path / "adapter"
    run_recipe(
        "tiny_vit.yaml", brain_binary, output, "--lora_r", "4", "--save_adapter_only", "true"
    )
    assert (output / "adapter_config.json").is_file()
    assert not (output / "model.safetensors").exists()
    set_seed(42)
    base = build_model(tiny_vit(), BINARY).model
    assert isinstance(PeftModel.from_pretrained(base, output), PeftModel)


def test_lora_settings_are_checked():
    with pytest.raises(MedftError, match="already keeps the backbone frozen"):
        ModelArguments("vit", pretrained=False, lora_r=4, freeze="backbone")
    with pytest.raises(MedftError, match="save_adapter_only needs LoRA"):
        ModelArguments("vit", pretrained=False, save_adapter_only=True)
    with pytest.raises(MedftError, match="LoRA: .*nowhere"):
        build_model(tiny_vit(lora_r=2, lora_target_modules=["nowhere"]), THREE)
