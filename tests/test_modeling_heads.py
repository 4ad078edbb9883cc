import pytest
import torch
from PIL import Image
from transformers import pipeline

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.modeling import build_model
from tests.helpers import THREE, run_recipe, tiny_timm, tiny_vit


def classifier_of(built):
    return built.model.get_submodule(built.layout.head_module)


@pytest.mark.parametrize("args", [tiny_vit, tiny_timm], ids=["vit", "timm"])
def test_head_dropout_acts_on_the_classifier_input_while_training(args):
    built = build_model(args(head_dropout=1.0), THREE)  # drop everything: only the bias is left
    pixels = torch.randn(4, 3, 32, 32)
    bias = classifier_of(built).bias
    built.model.train()
    with torch.no_grad():
        assert torch.allclose(built.model(pixel_values=pixels).logits, bias.expand(4, -1))
        built.model.eval()
        assert not torch.allclose(built.model(pixel_values=pixels).logits, bias.expand(4, -1))


def test_head_dropout_keeps_the_saved_weights_loadable(tmp_path):
    built = build_model(tiny_vit(head_dropout=0.3), THREE)
    assert set(built.model.state_dict()) == set(build_model(tiny_vit(), THREE).model.state_dict())


def test_timm_mlp_head_is_saved_and_served(brain_binary, tmp_path):
    output = tmp_path / "model"
    run_recipe("tiny_timm.yaml", brain_binary, output, "--model_name_or_path",
               "timm/convnext_atto", "--head_hidden_sizes", "24")  # fmt: skip
    classifier = pipeline("image-classification", model=str(output))
    assert classifier.model.timm_model.head.pre_logits.fc.out_features == 24
    assert len(classifier(Image.new("L", (40, 40)), top_k=2)) == 2


def test_mlp_heads_that_cannot_be_reloaded_are_refused():
    with pytest.raises(MedftError, match="transformers model's config cannot describe an MLP head"):
        ModelArguments("vit", pretrained=False, head_hidden_sizes=[512])
    with pytest.raises(MedftError, match="only one hidden layer"):
        ModelArguments("timm/convnext_small", head_hidden_sizes=[512, 256])
    with pytest.raises(MedftError, match="resnet18 does not take 'head_hidden_size'"):
        build_model(tiny_timm(head_hidden_sizes=[64]), THREE)


def test_drop_path_rate_where_the_backbone_has_it():
    convnext = ModelArguments(
        "convnext",
        pretrained=False,
        drop_path_rate=0.2,
        config_overrides={"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]},
    )
    assert build_model(convnext, THREE).model.config.drop_path_rate == 0.2
    timm_model = build_model(tiny_timm("timm/convnext_atto", drop_path_rate=0.2), THREE).model
    assert timm_model.config.model_args["drop_path_rate"] == 0.2
    with pytest.raises(MedftError, match="vit models have no stochastic depth"):
        build_model(tiny_vit(drop_path_rate=0.1), THREE)
    with pytest.raises(MedftError, match="densenet121 does not take 'drop_path_rate'"):
        build_model(tiny_timm("timm/densenet121", drop_path_rate=0.1), THREE)
