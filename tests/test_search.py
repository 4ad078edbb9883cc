import csv
import json
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from medft.cli import main
from medft.commands.search import check_space, search
from medft.config.commands import SearchArguments
from medft.errors import MedftError
from medft.parsing import parse_recipe
from tests.helpers import on_two_cpu_processes

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "head_dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]},
}


def search_recipe(folder: Path) -> Path:
    """A one-epoch random-weights ResNet-18 recipe searching SPACE."""
    recipe = folder / "search.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": "timm/resnet18",
                "pretrained": False,
                "image_size": 32,
                "num_train_epochs": 1,
                "per_device_train_batch_size": 32,
                "dataloader_num_workers": 0,
                "train_metrics_samples": 0,
                "search_space": SPACE,
            }
        )
    )
    return recipe


def test_a_three_trial_search_writes_a_ready_to_run_best_recipe(brain_binary, tmp_path, capsys):
    recipe = search_recipe(tmp_path)
    output = tmp_path / "search"
    code = main(["search", str(recipe), "--n-trials", "3", "--dataset_name", str(brain_binary),
                 "--output_dir", str(output)])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader((output / "trials.csv").open()))
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert {"learning_rate", "head_dropout", "lr_scheduler_type", "objective"} <= set(rows[0])
    printed = capsys.readouterr().out
    assert "macro_f1" in printed and "best_recipe.yaml" in printed

    data_args, model_args, args = parse_recipe(output / "best_recipe.yaml")
    assert data_args.dataset_name == str(brain_binary)
    assert args.output_dir == str(output / "best") and args.search_space is None
    assert 1e-4 <= args.learning_rate <= 1e-2 and 0 <= model_args.head_dropout <= 0.5
    best = min(rows, key=lambda row: -float(row["objective"] or "nan"))
    assert float(best["learning_rate"]) == pytest.approx(args.learning_rate)


def test_a_search_under_accelerate_shares_each_trial_and_reports_once(brain_binary, tmp_path):
    """Two processes: Optuna runs on the main one, whose trial settings the Trainer sends to
    the other; every trial's epoch is shared, and the main process alone writes and prints."""
    output = tmp_path / "search"
    result = on_two_cpu_processes(
        "-m", "medft.cli", "search", str(search_recipe(tmp_path)), "--n-trials", "2",
        "--dataset_name", str(brain_binary), "--output_dir", str(output),
    )  # fmt: skip
    assert result.stdout.count("Best recipe:") == 1
    rows = list(csv.DictReader((output / "trials.csv").open()))
    assert [(row["trial"], row["state"]) for row in rows] == [("0", "complete"), ("1", "complete")]
    train_images = len(load_from_disk(str(brain_binary))["train"])
    for trial in range(2):
        (state,) = (output / f"run-{trial}").glob("checkpoint-*/trainer_state.json")
        steps_one_process = -(-train_images // 32)
        assert json.loads(state.read_text())["global_step"] == -(-steps_one_process // 2)


@pytest.mark.parametrize(
    "space,message",
    [
        (None, "has no search_space"),
        ({"learning_rte": {"type": "float", "low": 0, "high": 1}}, "unknown key 'learning_rte'"),
        ({"horizontal_flip": {"type": "float", "low": 0, "high": 1}}, "is a data key"),
        ({"learning_rate": {"type": "uniform"}}, "needs type: one of"),
        ({"lora_r": {"type": "int", "low": 2}}, "needs high"),
    ],
)
def test_search_spaces_are_checked(space, message):
    with pytest.raises(MedftError, match=message):
        check_space(space)


def test_a_trial_that_would_combine_lora_with_layer_decay_is_refused(brain_binary, tmp_path):
    recipe = tmp_path / "search.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": "timm/resnet18",
                "pretrained": False,
                "image_size": 32,
                "layer_decay": 0.7,
                "dataloader_num_workers": 0,
                "train_metrics_samples": 0,
                "dataset_name": str(brain_binary),
                "output_dir": str(tmp_path / "search"),
                "search_space": {"lora_r": {"type": "int", "low": 2, "high": 4}},
            }
        )
    )
    with pytest.raises(MedftError, match="layer_decay with LoRA"):
        search(SearchArguments(recipe=recipe, n_trials=1))
