"""preprocessor.json's settings reproduce each family's processor, pixel for pixel, and a
setting that would not is caught."""

from __future__ import annotations

import pytest
from transformers import ConvNextImageProcessor, DeiTImageProcessor, ViTImageProcessorPil

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.inference.preprocessing import (
    FLOOR,
    HALF_EVEN,
    ON_PIL,
    ON_TENSOR,
    check_settings,
    input_size,
)
from medft.modeling import build_model
from medft.modeling.families import family_of
from tests.helpers import THREE, tiny_timm, tiny_vit


def processor_settings(processor):
    return family_of(processor).preprocessing_settings(processor)


def built_processor(args: ModelArguments):
    return build_model(args, THREE).processor


PROCESSORS = {
    # name: (processor, resize, crop, resize_on, crop_offset)
    "timm resnet": (lambda: built_processor(tiny_timm()), {"shortest_edge": 33}, 32, ON_PIL,
                    HALF_EVEN),
    "transformers vit": (lambda: built_processor(tiny_vit()), {"height": 32, "width": 32}, None,
                         ON_TENSOR, FLOOR),
    "vit, PIL backend": (lambda: ViTImageProcessorPil(size={"height": 48, "width": 40}),
                         {"height": 48, "width": 40}, None, ON_PIL, FLOOR),
    "convnext, crop_pct": (lambda: built_processor(ModelArguments("convnext", pretrained=False,
                           image_size=32)), {"shortest_edge": 36}, 32, ON_TENSOR, FLOOR),
    "convnext at 384: warped": (lambda: ConvNextImageProcessor(), {"height": 384, "width": 384},
                                None, ON_TENSOR, FLOOR),
    "deit: resize then crop": (lambda: DeiTImageProcessor(), {"height": 256, "width": 256}, 224,
                               ON_TENSOR, FLOOR),
}  # fmt: skip


@pytest.mark.parametrize("name", PROCESSORS)
def test_settings_reproduce_the_processor(name):
    make, resize, crop, resize_on, offset = PROCESSORS[name]
    processor = make()
    settings = processor_settings(processor)
    assert settings["resize"] == resize and settings["resize_on"] == resize_on
    assert settings["crop"] == ({"height": crop, "width": crop} if crop else None)
    assert settings["crop_offset"] == offset
    assert check_settings(settings, processor) < 1e-5


def test_a_setting_that_moves_pixels_is_caught():
    processor = built_processor(tiny_timm())
    settings = processor_settings(processor)
    with pytest.raises(MedftError, match="differ from TimmWrapperImageProcessor's pixels"):
        check_settings(settings | {"crop_offset": FLOOR}, processor)  # one pixel off on odd gaps
    with pytest.raises(MedftError, match="differ from"):
        check_settings(settings | {"interpolation": "bilinear"}, processor)
    with pytest.raises(MedftError, match="would make"):
        check_settings(settings | {"crop": {"height": 30, "width": 30}}, processor)


def test_varying_input_sizes_cannot_be_exported():
    settings = processor_settings(ViTImageProcessorPil(size={"shortest_edge": 40}))
    with pytest.raises(MedftError, match="needs a fixed input size"):
        input_size(settings)
