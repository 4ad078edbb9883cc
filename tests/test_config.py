from pathlib import Path

import pytest

from medft.errors import MedftError
from medft.modeling.backbones import check_timm_arguments, timm_architecture
from medft.modeling.heads import timm_head_settings
from medft.parsing import parse_recipe, read_recipe_file

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures"
REQUIRED = {"dataset_name": "data/x", "output_dir": "out"}
REQUIRED_FLAGS = ["--dataset_name", "d", "--output_dir", "o"]


def test_every_recipe_exists_as_the_issue_lists_them():
    names = {path.stem for path in RECIPES}
    assert names >= {
        "brain_binary_resnet50", "brain_multiclass_resnetrs152",
        "brain_multiclass_efficientnetv2_b1", "brain_multiclass_convnext_small",
        "vit_multiclass", "vit_binary", "chestxray14_densenet121", "chestxray14_vit", "demo",
    }  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_every_recipe_parses_and_names_a_real_model(recipe):
    data_args, model_args, training_args = parse_recipe(recipe)
    assert data_args.dataset_name and training_args.output_dir
    if model_args.is_timm:  # architecture, tag and settings, checked offline on the meta device
        architecture, _, _ = timm_architecture(model_args.model_name_or_path)
        settings = dict(model_args.config_overrides or {}) | timm_head_settings(model_args)
        check_timm_arguments(architecture, settings)
    else:
        assert model_args.model_name_or_path.count("/") == 1  # a Hub id
    if "chestxray14" in recipe.stem:
        assert data_args.dataset_name == "data/cxr14"


def test_command_line_overrides_the_recipe():
    recipe = FIXTURES / "tiny_vit.yaml"
    _, model_args, training_args = parse_recipe(
        recipe, ["--learning_rate", "3e-4", "--dataset_name", "d", "--output_dir", "o"]
    )
    assert training_args.learning_rate == 3e-4
    assert read_recipe_file(recipe)["learning_rate"] == 1e-3
    assert model_args.config_overrides["hidden_size"] == 32
    data_args, _, training_args = parse_recipe(recipe, ["--dataset_name=d", "--output-dir=o"])
    assert (data_args.dataset_name, training_args.output_dir) == ("d", "o")


def test_medft_defaults():
    _, _, args = parse_recipe(
        FIXTURES / "tiny_vit.yaml", ["--dataset_name", "d", "--output_dir", "o"]
    )
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "auto"
    assert args.remove_unused_columns is False
    assert args.use_cpu is True  # no GPU here


@pytest.mark.parametrize(
    "values,message",
    [
        ({"learnin_rate": 0.1}, "unknown key 'learnin_rate' (did you mean 'learning_rate'?)"),
        ({"learning_rate": [1]}, "learning_rate must be a float, got [1]"),
        ({"num_train_epochs": "many"}, "num_train_epochs must be a float"),
        ({"pretrained": "yes"}, "pretrained must be a bool"),
        ({"image_size": 4}, "image_size must be at least 8"),
        ({"config_overrides": "{not json"}, "config_overrides is not valid JSON"),
        ({"eval_strategy": "epoch", "save_strategy": "steps"}, "save and eval strategy to match"),
    ],
)
def test_bad_recipes_name_the_key(values, message):
    with pytest.raises(MedftError) as error:
        parse_recipe(values={"model_name_or_path": "vit", **REQUIRED, **values})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_keys_and_bad_overrides_are_named(tmp_path):
    with pytest.raises(MedftError, match="missing required key.*dataset_name"):
        parse_recipe(values={"model_name_or_path": "vit", "output_dir": "o"})
    with pytest.raises(MedftError, match="missing required key.*output_dir"):
        parse_recipe(values={"model_name_or_path": "vit", "dataset_name": "d"})
    with pytest.raises(MedftError, match="'--learning_rat' \\(did you mean 'learning_rate'\\?\\)"):
        parse_recipe(FIXTURES / "tiny_vit.yaml", ["--learning_rat", "1", *REQUIRED_FLAGS])
    with pytest.raises(MedftError, match="invalid float value: 'abc'"):
        parse_recipe(FIXTURES / "tiny_vit.yaml", ["--learning_rate", "abc", *REQUIRED_FLAGS])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(MedftError, match="must be a mapping"):
        parse_recipe(tmp_path / "list.yaml")
    with pytest.raises(MedftError, match="does not exist"):
        parse_recipe(tmp_path / "none.yaml")
