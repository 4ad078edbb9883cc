"""`ema_decay`: timm's EMA of the weights, scored beside them, and the better one saved."""

import json

import pytest
import torch
from safetensors.torch import load_file
from timm.utils import ModelEmaV3
from transformers import AutoModelForImageClassification, TrainerCallback

from medft.data.pipeline import load_data, set_transforms
from medft.errors import MedftError
from medft.modeling import build_model
from medft.parsing import parse_recipe
from medft.training.build import build_trainer
from medft.training.ema import EMA_NAME
from tests.helpers import FIXTURES, run_recipe

DECAY = "0.8"


class Trajectory(TrainerCallback):
    """The weights after every optimizer step, as the EMA saw them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def test_the_kept_average_is_timms_ema_of_the_run(brain_binary, tmp_path):
    data_args, model_args, args = parse_recipe(
        FIXTURES / "tiny_timm.yaml",
        ["--dataset_name", str(brain_binary), "--output_dir", str(tmp_path),
         "--ema_decay", DECAY, "--num_train_epochs", "2"],
    )  # fmt: skip
    data = load_data(data_args, args)
    built = build_model(model_args, data.task)
    initial = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    set_transforms(data, built.processor, data_args)
    trainer = build_trainer(data, data_args, model_args, args, built)
    trajectory = Trajectory()
    trainer.add_callback(trajectory)  # after the EMA's own callback: sees the same weights
    trainer.train()

    expected = ModelEmaV3(built.model, decay=float(DECAY))
    expected.module.load_state_dict(initial)
    snapshot = built.model.__class__(built.model.config)
    for step, weights in enumerate(trajectory.steps, start=1):
        snapshot.load_state_dict(weights)
        expected.update(snapshot, step=step)
        checkpoint = tmp_path / f"checkpoint-{step}" / EMA_NAME
        if checkpoint.is_file():  # each epoch's checkpoint carries the average of that step
            saved = load_file(str(checkpoint))
            for name, value in expected.module.state_dict().items():
                assert torch.allclose(saved[name], value, atol=1e-6), name
    kept = trainer.ema_callback.ema.module.state_dict()
    for name, value in expected.module.state_dict().items():
        assert torch.allclose(kept[name], value, atol=1e-6), name
    logged = [e for e in trainer.state.log_history if "eval_ema_macro_f1" in e]
    chosen = [e for e in trainer.state.log_history if "eval_selected_macro_f1" in e]
    assert len(logged) == len(chosen) == 2  # the average scored beside the raw weights
    for entry in chosen:
        assert entry["eval_selected_macro_f1"] == max(
            entry["eval_macro_f1"],
            next(e["eval_ema_macro_f1"] for e in logged if e["step"] == entry["step"]),
        )


def test_the_better_of_raw_and_average_is_saved_and_the_card_says_which(brain_binary, tmp_path):
    output = tmp_path / "model"
    run_recipe("tiny_timm.yaml", brain_binary, output, "--ema_decay", DECAY,
               "--num_train_epochs", "2")  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    best = output / state["best_model_checkpoint"]
    step = int(best.name.rsplit("-", 1)[1])
    entry = next(
        e for e in state["log_history"] if e.get("step") == step and "eval_selected_is_ema" in e
    )
    saved = AutoModelForImageClassification.from_pretrained(output).state_dict()
    if entry["eval_selected_is_ema"]:
        reference = load_file(f"{best}/{EMA_NAME}")
        words = "exponential moving average of the weights (decay 0.8), which scored better"
    else:
        reference = AutoModelForImageClassification.from_pretrained(best).state_dict()
        words = "the raw weights, which scored better"
    for name, value in reference.items():
        assert torch.equal(saved[name], value), name
    assert words in (output / "README.md").read_text()
    assert state["best_metric"] == entry["eval_selected_macro_f1"]


def test_ema_with_lora_is_refused_in_one_line():
    with pytest.raises(MedftError, match="ema_decay with LoRA"):
        parse_recipe(
            values={
                "model_name_or_path": "vit",
                "dataset_name": "d",
                "output_dir": "o",
                "lora_r": 4,
                "ema_decay": 0.99,
            }
        )
    with pytest.raises(MedftError, match=r"ema_decay must be in \(0, 1\)"):
        parse_recipe(
            values={
                "model_name_or_path": "vit",
                "dataset_name": "d",
                "output_dir": "o",
                "ema_decay": 1.5,
            }
        )
