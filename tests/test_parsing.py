"""`medft.parsing`: a recipe file and command-line overrides into the three recipe
dataclasses, every value checked against its field's type, every mistake one line naming
the key (the recipes themselves and the range checks of each field: test_config)."""

from enum import Enum
from typing import Literal

import pytest

from medft.errors import MedftError
from medft.parsing import (
    check_combinations,
    check_value,
    closest_key,
    field_types,
    option_key,
    overridden_values,
    parse_recipe,
    read_recipe_file,
    required_keys,
)

REQUIRED = {"model_name_or_path": "vit", "dataset_name": "d", "output_dir": "o"}
BASE = "model_name_or_path: vit\ndataset_name: d\noutput_dir: o\n"


def write_recipe(folder, text: str):
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_recipe_file_fills_all_three_dataclasses_and_the_command_line_wins(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "model_name_or_path: vit\ndataset_name: data/a\noutput_dir: out\n"
        "image_size: 64\nhorizontal_flip: 0.5\nlearning_rate: 3e-4\nnum_train_epochs: 2\n",
    )
    data, model, training = parse_recipe(recipe, ["--image_size", "96", "--dataset_name=data/b"])
    assert (data.dataset_name, data.horizontal_flip) == ("data/b", 0.5)
    assert (model.model_name_or_path, model.image_size) == ("vit", 96)
    assert training.learning_rate == 3e-4  # YAML 1.1 reads 3e-4 as a string: a float here
    assert training.num_train_epochs == 2.0 and isinstance(training.num_train_epochs, float)
    assert training.output_dir == "out"


def test_the_recipe_keeps_the_keys_it_was_given_file_then_command_line(tmp_path):
    recipe = write_recipe(tmp_path, BASE)
    parsed = parse_recipe(recipe, ["--learning-rate", "0.01", "--zoom=0.2"])
    assert parsed.given == REQUIRED | {"learning_rate": 0.01, "zoom": 0.2}
    assert (parsed.data, parsed.model, parsed.training) == tuple(parsed)
    assert "use_cpu" not in parsed.given  # a default medft fills in is not a given key


@pytest.mark.parametrize(
    "yaml_value, command_line, expected",
    [("false", "true", True), ("true", "false", False), ("yes", "no", False)],
)
def test_booleans_from_yaml_and_from_the_command_line(tmp_path, yaml_value, command_line, expected):
    recipe = write_recipe(
        tmp_path,
        f"model_name_or_path: vit\ndataset_name: d\noutput_dir: o\npretrained: {yaml_value}\n",
    )
    from_file = parse_recipe(recipe).model.pretrained
    assert from_file is (yaml_value != "false") and from_file is not expected
    assert parse_recipe(recipe, ["--pretrained", command_line]).model.pretrained is expected


def test_a_quoted_boolean_is_a_string_and_refused_naming_the_recipe_and_key(tmp_path):
    recipe = write_recipe(tmp_path, BASE + "pretrained: 'false'\n")
    with pytest.raises(MedftError) as error:
        parse_recipe(recipe)
    assert str(error.value) == f"{recipe}: pretrained must be a bool, got 'false' (str)."


def test_an_unknown_key_is_named_with_the_closest_one_and_the_recipe(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: vit\nhorizontal_flipp: 0.5\n")
    with pytest.raises(MedftError) as error:
        parse_recipe(recipe, ["--dataset_name", "d", "--output_dir", "o"])
    assert str(error.value) == (
        f"{recipe}: unknown key 'horizontal_flipp' (did you mean 'horizontal_flip'?)."
    )
    with pytest.raises(MedftError, match=r"^recipe: unknown key 'qqqqqq'\.$"):
        parse_recipe(values={**REQUIRED, "qqqqqq": 1})  # nothing close: no suggestion


def test_secrets_are_refused_from_a_file_values_and_the_command_line(tmp_path):
    recipe = write_recipe(tmp_path, "model_name_or_path: vit\nhub_token: hf_x\n")
    for call in (
        lambda: parse_recipe(recipe),
        lambda: parse_recipe(values={**REQUIRED, "hub_token": "hf_x"}),
        lambda: parse_recipe(values=REQUIRED, overrides=["--hub-token=hf_x"]),
    ):
        with pytest.raises(MedftError, match="hub_token does not belong in a recipe"):
            call()


def test_a_recipe_file_that_is_not_yaml_or_holds_nothing(tmp_path):
    broken = write_recipe(tmp_path, "model_name_or_path: [vit\n")
    with pytest.raises(MedftError) as error:
        read_recipe_file(broken)
    assert str(error.value).startswith(f"recipe {broken} is not valid YAML: ")
    assert "\n" not in str(error.value)
    assert read_recipe_file(write_recipe(tmp_path, "# only a comment\n")) == {}


def test_the_required_keys_are_those_without_a_default():
    assert set(required_keys()) == {"model_name_or_path", "dataset_name", "output_dir"}
    given_on_the_command_line = parse_recipe(
        values={"model_name_or_path": "vit"}, overrides=["--dataset_name", "d", "--output-dir", "o"]
    )
    assert given_on_the_command_line.data.dataset_name == "d"


class Colour(Enum):
    RED = "red"


@pytest.mark.parametrize(
    "hint, value, expected",
    [
        (float, 1, 1.0),
        (float, "3e-4", 3e-4),
        (int, 7, 7),
        (bool, False, False),
        (str, 12, "12"),
        (list[float], 0.5, [0.5]),  # a single value stands for a list of one
        (list[float], [1, "2e-1"], [1.0, 0.2]),
        (dict, {"a": 1}, {"a": 1}),
        (int | None, None, None),
        (int | str, "auto", "auto"),
        (Literal["a", "b"], "b", "b"),
        (Colour, "red", "red"),
    ],
)
def test_values_that_fit_their_field_type(hint, value, expected):
    checked = check_value("key", hint, value)
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize(
    "hint, value, message",
    [
        (int, True, "key must be a int, got True (bool)"),  # a bool is not a number here
        (float, False, "key must be a float, got False (bool)"),
        (float, "fast", "key must be a float, got 'fast' (str)"),
        (bool, "true", "key must be a bool, got 'true' (str)"),
        (str, [1], "key must be a str, got [1] (list)"),
        (dict, "a=1", "key must be a dict, got 'a=1' (str)"),
        (list[int], [1, "x"], "key must be a int, got 'x' (str)"),
        (int | None, "x", "key must be a int, got 'x' (str)"),
        (Literal["a", "b"], "c", "key must be one of a, b, got 'c'"),
        (Colour, "blue", "key must be one of red, got 'blue'"),
    ],
)
def test_values_of_the_wrong_type_name_the_key_and_the_type(hint, value, message):
    with pytest.raises(MedftError) as error:
        check_value("key", hint, value)
    assert str(error.value) == message + "."


def test_every_recipe_key_has_its_declared_type():
    types = {key: hint for key, (hint, _) in field_types().items()}
    assert types["zoom"] is float and types["seed"] is int and types["pretrained"] is bool
    assert types["crop_scale"] == list[float]
    assert {"use_cpu", "model_name_or_path", "dataset_name"} <= set(types)


def test_closest_keys_and_option_keys():
    keys = ["learning_rate", "weight_decay"]
    assert closest_key("learning_rte", keys) == " (did you mean 'learning_rate'?)"
    assert closest_key("xyz", keys) == ""
    assert "transformers now calls it warmup_steps" in closest_key("warmup_ratio", keys)
    assert option_key("--output-dir=x") == "output_dir"
    assert option_key("--learning_rate") == "learning_rate"


def test_only_the_keys_given_on_the_command_line_are_overridden():
    values = overridden_values(["--learning_rate", "0.5", "--pretrained", "false", "stray"])
    assert values == {"learning_rate": 0.5, "pretrained": False}
    assert overridden_values([]) == {}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"layer_decay": 0.7}, "layer_decay with LoRA"),
        ({"ema_decay": 0.99}, "ema_decay with LoRA"),
        ({"calibration": "temperature"}, "calibration with LoRA"),
    ],
)
def test_techniques_that_cannot_work_together_with_lora_are_refused(settings, message):
    given = {"layer_decay": None, "ema_decay": None, "calibration": "none"} | settings
    with pytest.raises(MedftError, match=message):
        check_combinations(4, **given)
    check_combinations(0, **given)  # without LoRA, each is fine
    with pytest.raises(MedftError, match=message):
        parse_recipe(values={**REQUIRED, "lora_r": 4, **settings})
