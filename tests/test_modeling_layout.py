import pytest

from medft.modeling import build_model
from medft.modeling.layout import module_prefix
from tests.helpers import THREE, tiny_timm, tiny_vit


@pytest.mark.parametrize(
    "args,blocks,head",
    [
        (tiny_vit(), ["layers.0", "layers.1"], "classifier"),
        (tiny_timm(), ["layer1", "layer2", "layer3", "layer4"], "timm_model.fc"),
        (
            tiny_timm("timm/convnext_atto"),
            ["stages.0.blocks", "stages.1", "stages.2", "stages.3"],
            "timm_model.head.fc",
        ),
        (
            tiny_timm("timm/vit_tiny_patch16_224", config_overrides={"depth": 3}),
            ["blocks.0", "blocks.1", "group 3"],
            "timm_model.head",
        ),
    ],
    ids=["vit", "timm-resnet", "timm-convnext", "timm-vit"],
)
def test_layout_orders_every_parameter_into_stem_blocks_neck_head(args, blocks, head):
    built = build_model(args, THREE)
    layout = built.layout
    assert [name for name, _ in layout.blocks] == blocks
    assert layout.head_module == head
    assert all(name.startswith(head) for name in layout.head)
    assert set(layout.names) == {name for name, _ in built.model.named_parameters()}
    groups = [name for name, _ in layout.groups()]
    assert groups[0] == "stem" and groups[-1] == "head"


def test_module_prefix():
    assert module_prefix(["layer1.0.conv1.weight", "layer1.1.bn2.bias"]) == "layer1"
    assert module_prefix(["a.weight", "b.weight"]) == ""
