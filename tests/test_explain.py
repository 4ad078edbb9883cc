"""`medft explain`: Grad-CAM on the right layer of each family; bad files don't stop a run."""

import pytest
import torch
from PIL import Image

from medft.commands.explain import cam_layer, explain, token_grid
from medft.config import ModelArguments
from medft.config.inference import ExplainArguments
from medft.errors import MedftError
from medft.formats.image_files import is_image_file
from medft.modeling import build_model
from tests.helpers import THREE, tiny_timm, tiny_vit


def test_a_vit_is_explained_on_its_patch_grid_and_bad_files_are_reported(
    trained_binary, brain_raw, tmp_path
):
    folder = brain_raw / "Glioblastoma T2"  # scans and three broken files
    summary = explain(
        ExplainArguments(model=trained_binary, images=[folder], output=tmp_path, progress=False)
    )
    assert summary.method == "Grad-CAM on the patch-token grid of vit.layers.1.layernorm_before"
    assert {name.rsplit("/", 1)[-1] for name in summary.errors} == {
        "empty.jpg",
        "notes.jpg",
        "truncated.jpeg",
    }
    scans = [p for p in folder.iterdir() if is_image_file(p)]
    assert len(summary.written) == len(scans) - 3
    for path in summary.written:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 600  # image, overlay, scores


def test_a_timm_cnn_explains_a_chosen_finding(trained_multilabel, nih_raw, tmp_path):
    images = sorted(nih_raw.glob("images_00*/images/*.png"))[:2]
    summary = explain(
        ExplainArguments(
            model=trained_multilabel,
            images=images,
            output=tmp_path,
            target="Effusion",
            progress=False,
        )
    )
    assert summary.method == "Grad-CAM on timm_model.layer3"  # layer4 is 1x1 at 32 px
    assert [p.name for p in summary.written] == [f"{image.stem}.png" for image in images]
    with pytest.raises(MedftError, match="not a label of this model"):
        explain(
            ExplainArguments(
                model=trained_multilabel, images=images, output=tmp_path, target="Tumour"
            )
        )


def test_token_grid_drops_the_class_token_and_lays_patches_out_row_by_row():
    tokens = torch.arange(5.0).view(1, 5, 1).repeat(1, 1, 3)  # token i holds i; 3 channels
    grid = token_grid(5, (2, 2))(tokens)
    assert grid.shape == (1, 3, 2, 2)
    assert grid[0, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "args,size,layer,tokens",
    [
        (tiny_vit(), 32, "vit.layers.1.layernorm_before", (1, 4, 4)),  # class token, 8 px patches
        (
            tiny_timm("timm/vit_tiny_patch16_224", config_overrides={"depth": 2, "reg_tokens": 2}),
            32,
            "timm_model.blocks.1.norm1",
            (3, 2, 2),
        ),  # class + 2 register tokens, 16 px
        (tiny_timm(), 64, "timm_model.layer4", None),
        (
            ModelArguments(
                "convnext",
                pretrained=False,
                image_size=64,
                config_overrides={"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]},
            ),
            64,
            "convnext.encoder.stages.3",
            None,
        ),
        (
            ModelArguments(
                "resnet",
                pretrained=False,
                image_size=64,
                config_overrides={"depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8},
            ),
            64,
            "resnet.encoder.stages.1",
            None,
        ),
    ],
    ids=["vit", "timm-vit-registers", "timm-resnet", "convnext", "resnet"],
)
def test_the_layer_explained_suits_each_family(args, size, layer, tokens):
    model = build_model(args, THREE).model.eval()
    found = cam_layer(model, torch.rand(1, 3, size, size))
    assert found.name == layer
    if tokens is None:
        assert found.reshape is None
    else:  # the grid is what is left once the class and register tokens are dropped
        prefix, height, width = tokens
        hidden = torch.zeros(1, prefix + height * width, 8)
        assert found.reshape(hidden).shape == (1, 8, height, width)


@pytest.mark.parametrize(
    "args",
    [
        ModelArguments(
            "swin",
            pretrained=False,
            image_size=64,
            config_overrides={
                "embed_dim": 16,
                "depths": [1, 1],
                "num_heads": [1, 2],
                "window_size": 4,
            },
        ),
        tiny_timm(
            "timm/swin_tiny_patch4_window7_224",
            config_overrides={
                "depths": (1, 1, 1, 1),
                "embed_dim": 32,
                "num_heads": (1, 1, 1, 1),
                "window_size": 2,
            },
        ),
    ],
    ids=["swin", "timm-swin"],
)
def test_windowed_transformers_are_refused_not_explained_wrongly(args):
    model = build_model(args, THREE).model.eval()
    size = args.image_size
    with pytest.raises(MedftError, match="explain supports"):
        cam_layer(model, torch.rand(1, 3, size, size))
