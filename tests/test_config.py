from pathlib import Path

import pytest
import yaml

from medft.cli import main
from medft.errors import MedftError
from medft.modeling.families.timm import check_timm_arguments, timm_architecture, timm_name
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
    # a timm name: architecture, tag and settings, checked offline on the meta device
    if timm_name(model_args.model_name_or_path):
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


NAN, INF = float("nan"), float("inf")
BAD_VALUES = [
    ("per_device_train_batch_size", -1, "per_device_train_batch_size must be at least 1, got -1"),
    ("per_device_train_batch_size", 0, "per_device_train_batch_size must be at least 1, got 0"),
    ("per_device_eval_batch_size", 0, "per_device_eval_batch_size must be at least 1, got 0"),
    ("gradient_accumulation_steps", 0, "gradient_accumulation_steps must be at least 1, got 0"),
    ("learning_rate", NAN, "learning_rate must be a finite number, got nan"),
    ("learning_rate", INF, "learning_rate must be a finite number, got inf"),
    ("learning_rate", 0, "learning_rate must be positive, got 0.0"),
    ("learning_rate", -1e-3, "learning_rate must be positive, got -0.001"),
    ("weight_decay", NAN, "weight_decay must be a finite number, got nan"),
    ("weight_decay", -0.1, "weight_decay must not be negative, got -0.1"),
    ("num_train_epochs", NAN, "num_train_epochs must be a finite number, got nan"),
    ("num_train_epochs", -1, "num_train_epochs must be positive (or give max_steps), got -1.0"),
    ("num_train_epochs", 0, "num_train_epochs must be positive (or give max_steps), got 0.0"),
    ("warmup_steps", NAN, "warmup_steps must be a finite number, got nan"),
    ("warmup_steps", -0.1, "warmup_steps = -0.1, Expected value warmup_steps >= 0"),  # by HF
    ("max_grad_norm", NAN, "max_grad_norm must be a finite number, got nan"),
    ("adam_epsilon", -0.1, "adam_epsilon must not be negative, got -0.1"),
    ("adam_beta2", 1.0, "adam_beta2 must be in [0, 1), got 1.0"),
    ("label_smoothing_factor", 1.5, "label_smoothing_factor must be in [0, 1), got 1.5"),
    ("early_stopping_threshold", NAN, "early_stopping_threshold must be a finite number, got nan"),
    ("zoom", NAN, "zoom must be a finite number, got nan"),
    ("crop_scale", [NAN, 1.0], "crop_scale must be finite numbers, got [nan, 1.0]"),
    ("drop_path_rate", INF, "drop_path_rate must be a finite number, got inf"),
]


@pytest.mark.parametrize("key,value,message", BAD_VALUES, ids=lambda v: str(v))
def test_bad_values_are_refused_when_parsed_from_a_recipe_file_or_the_command_line(
    key, value, message, tmp_path
):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "vit", **REQUIRED, key: value}))
    with pytest.raises(MedftError) as from_file:
        parse_recipe(recipe)
    words = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    with pytest.raises(MedftError) as from_command_line:
        parse_recipe(FIXTURES / "tiny_vit.yaml", [*REQUIRED_FLAGS, f"--{key}", *words])
    for error in (from_file, from_command_line):
        assert message in str(error.value) and "\n" not in str(error.value)


def test_medft_train_refuses_a_bad_value_before_it_looks_for_the_data(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: vit\npretrained: false\nlearning_rate: .nan\n"
        f"dataset_name: {tmp_path / 'no_such_data'}\noutput_dir: {tmp_path / 'o'}\n"
    )
    assert main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "medft: error: learning_rate must be a finite number, got nan."
    ]
    assert main(["train", str(recipe), "--learning_rate", "1e-3", "--num_train_epochs", "-1"]) == 2
    assert "num_train_epochs must be positive" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_key_that_transformers_renamed_names_its_new_key(tmp_path):
    with pytest.raises(MedftError, match="warmup_ratio.*warmup_steps"):
        parse_recipe(values={"model_name_or_path": "vit", **REQUIRED, "warmup_ratio": 0.1})
    with pytest.raises(MedftError, match="warmup_ratio.*warmup_steps"):
        parse_recipe(FIXTURES / "tiny_vit.yaml", [*REQUIRED_FLAGS, "--warmup_ratio", "0.1"])


@pytest.mark.parametrize(("train", "given", "evaluated"), [
    (16, None, 32), (32, None, 64), (128, None, 256), (200, None, 256), (512, None, 512),
    (16, 7, 7),
])  # fmt: skip
def test_the_eval_batch_defaults_to_twice_the_training_batch_capped(train, given, evaluated):
    eval_batch = {} if given is None else {"per_device_eval_batch_size": given}
    values = {"model_name_or_path": "vit", **REQUIRED, "per_device_train_batch_size": train}
    *_, args = parse_recipe(values=values | eval_batch)
    assert args.per_device_eval_batch_size == evaluated
