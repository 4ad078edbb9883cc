"""The backbone families: the family and weights decided once from each kind of source, and
each family's reading of its processor (input size, mean, std, resampling, rescale
arithmetic, preprocessor.json's settings) equal to what the processor makes of an image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    DeiTImageProcessor,
    TimmWrapperConfig,
    ViTConfig,
    ViTImageProcessorPil,
)

from medft.config import ModelArguments
from medft.data.preprocessed import Uint8Form
from medft.errors import MedftError
from medft.inference.preprocessing import input_size
from medft.modeling import build_model
from medft.modeling.backbones import build_processor
from medft.modeling.families import (
    TIMM,
    TRANSFORMERS,
    base_model_id,
    family_of,
    resolve_source,
    weights_origin,
)
from tests import pretrained
from tests.helpers import THREE, save_tiny_model, tiny_timm, tiny_vit


def test_a_timm_name_is_timms_with_random_weights_or_a_weights_file(tmp_path):
    source = resolve_source(tiny_timm())
    assert source.family is TIMM and source.weights is None
    assert isinstance(source.config, TimmWrapperConfig)
    assert source.config.architecture == "resnet18"
    weights_file = tmp_path / "resnet18.safetensors"
    args = ModelArguments("timm/resnet18.a1_in1k", pretrained_weights=str(weights_file))
    source = resolve_source(args)  # the file is read when the model is built
    assert source.family is TIMM and source.weights is None
    assert "hf_hub_id" not in source.config.pretrained_cfg  # the file's, not timm's Hub weights
    assert base_model_id(args) is None
    assert weights_origin(args) == "the weights file `resnet18.safetensors`"


def test_a_model_type_is_transformers_and_has_no_weights():
    source = resolve_source(tiny_vit())
    assert source.family is TRANSFORMERS and source.weights is None
    assert isinstance(source.config, ViTConfig) and source.config.hidden_size == 32
    with pytest.raises(MedftError, match="'vit' is a model type, which has no weights"):
        resolve_source(ModelArguments("vit"))


@pytest.mark.parametrize("family", ["vit", "timm"])
def test_a_local_folder_is_of_the_family_its_config_names(family, tmp_path):
    folder = save_tiny_model(tmp_path / family, family)
    source = resolve_source(ModelArguments(str(folder)))
    assert source.family is (TIMM if family == "timm" else TRANSFORMERS)
    assert source.weights == str(folder)
    assert resolve_source(ModelArguments(str(folder), pretrained=False)).weights is None
    args = ModelArguments(str(folder))
    assert base_model_id(args) is None
    assert weights_origin(args) == f"the local model folder `{family}`"


def test_timms_own_hub_export_is_timms(pretrained_folders):
    source = resolve_source(ModelArguments(str(pretrained_folders["timm_hub_export"])))
    assert source.family is TIMM


@pytest.mark.parametrize(
    "hub_id,family",
    [(pretrained.TIMM_HUB_ID, TIMM), (pretrained.VIT_HUB_ID, TRANSFORMERS)],
    ids=["timm", "transformers"],
)
def test_a_hub_id_is_of_the_family_its_config_names(offline_hub, hub_id, family):
    args = ModelArguments(hub_id)
    source = resolve_source(args)
    assert source.family is family and source.weights == hub_id
    assert base_model_id(args) == hub_id
    assert weights_origin(args) == f"[`{hub_id}`](https://huggingface.co/{hub_id})"


def test_what_was_made_tells_its_family():
    for args, family in ((tiny_timm(), TIMM), (tiny_vit(), TRANSFORMERS)):
        built = build_model(args, THREE)
        assert built.family is family
        made = (built.model, built.model.config, built.processor)
        assert [family_of(thing) for thing in made] == [family] * 3
    assert TIMM.card_tags == ("timm",) and TRANSFORMERS.card_tags == ()


@pytest.mark.parametrize("family", ["vit", "timm"])
def test_a_saved_models_processor_tells_its_family(family, tmp_path):
    processor = AutoImageProcessor.from_pretrained(save_tiny_model(tmp_path, family))
    assert family_of(processor) is (TIMM if family == "timm" else TRANSFORMERS)
    assert family_of(processor).input_spec(processor).size == (32, 32)


def test_the_trainer_saves_a_transformers_processor_and_no_timm_one():
    timm_processor, vit_processor = build_processor(tiny_timm()), build_processor(tiny_vit())
    assert TIMM.processing_class(timm_processor) is None  # its config.json carries it
    assert TRANSFORMERS.processing_class(vit_processor) is vit_processor


PROCESSORS = {
    "timm resnet": lambda: build_processor(tiny_timm()),
    "timm vit": lambda: build_processor(
        tiny_timm("timm/vit_tiny_patch16_224", config_overrides={"depth": 1})
    ),
    "transformers vit": lambda: build_processor(tiny_vit()),
    "vit, PIL backend": lambda: ViTImageProcessorPil(size={"height": 48, "width": 40}),
    "convnext, crop_pct": lambda: build_processor(
        ModelArguments("convnext", pretrained=False, image_size=32)
    ),
    "deit: resize then crop": lambda: DeiTImageProcessor(),
}


def noise(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", PROCESSORS)
def test_the_input_spec_is_what_the_processor_makes(name):
    processor = PROCESSORS[name]()
    family = family_of(processor)
    spec = family.input_spec(processor)
    for image in (noise(70, 50), noise(50, 90)):
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape[-2:]) == spec.size
        # the processor's floats are its uint8 pixels under the spec's arithmetic, bit for bit
        assert Uint8Form(spec).encode(pixels) is not None
    grey = processor(images=Image.new("RGB", (60, 60), (51, 51, 51)), return_tensors="pt")
    expected = (0.2 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    assert torch.allclose(grey["pixel_values"][0, :, 0, 0], expected, atol=1e-5)
    settings = family.preprocessing_settings(processor)  # preprocessor.json agrees
    assert input_size(settings) == spec.size
    assert settings["mean"] == pytest.approx(spec.mean)
    assert settings["std"] == pytest.approx(spec.std)
    assert settings["interpolation"] == spec.interpolation.value
