"""The techniques reach the Trainer: loss weights, sampler, mixing, optimizer groups, callbacks."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import WeightedRandomSampler
from transformers import EarlyStoppingCallback, EvalPrediction

from medft.data.pipeline import load_data, set_transforms
from medft.data.transforms import eval_pixels
from medft.errors import MedftError
from medft.modeling import build_model
from medft.modeling.freezing import GradualUnfreezing
from medft.parsing import parse_recipe
from medft.training import build_trainer
from tests.helpers import FIXTURES, run_recipe


def trainer_and_model(dataset, tmp_path, recipe="tiny_timm.yaml", *overrides):
    data_args, model_args, args = parse_recipe(
        FIXTURES / recipe,
        ["--dataset_name", str(dataset), "--output_dir", str(tmp_path), *overrides],
    )
    data = load_data(data_args, args)
    built = build_model(model_args, data.task)
    set_transforms(data, built.processor, data_args)
    return build_trainer(data, data_args, model_args, args, built), built


def trainer_for(dataset, tmp_path, recipe="tiny_timm.yaml", *overrides):
    return trainer_and_model(dataset, tmp_path, recipe, *overrides)[0]


def test_defaults_change_nothing(brain_binary, tmp_path):
    trainer = trainer_for(brain_binary, tmp_path)
    assert trainer.loss.weights is None and trainer.mixer is None
    assert not isinstance(trainer._get_train_sampler(), WeightedRandomSampler)
    assert not any(isinstance(c, EarlyStoppingCallback) for c in trainer.callback_handler.callbacks)


def test_techniques_are_wired_into_the_trainer(brain_binary, tmp_path):
    trainer = trainer_for(
        brain_binary, tmp_path, "tiny_timm.yaml",
        "--class_weighting", "balanced", "--sampler", "weighted", "--mixup_alpha", "0.2",
        "--early_stopping_patience", "2", "--layer_decay", "0.5", "--freeze", "backbone",
        "--gradual_unfreeze_epochs", "1",
    )  # fmt: skip
    labels = torch.tensor(trainer.train_dataset.with_format(None)["label"])
    counts = torch.bincount(labels)
    assert trainer.loss.weights.tolist() == pytest.approx((len(labels) / (2 * counts)).tolist())
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, WeightedRandomSampler)
    assert trainer.mixer is not None
    callbacks = {type(c) for c in trainer.callback_handler.callbacks}
    assert {EarlyStoppingCallback, GradualUnfreezing} <= callbacks
    optimizer = trainer.create_optimizer()
    held = sum(len(group["params"]) for group in optimizer.param_groups)
    assert held == len(list(trainer.model.parameters()))  # frozen ones too, for unfreezing
    assert sorted({g["lr"] for g in optimizer.param_groups})[0] == pytest.approx(1e-3 * 0.5**5)


def test_lora_and_layer_decay_are_refused_together(brain_binary, tmp_path):
    with pytest.raises(MedftError, match="layer_decay with LoRA"):
        run_recipe("tiny_vit.yaml", brain_binary, tmp_path, "--lora_r", "2", "--layer_decay", "0.7")


def test_early_stopping_needs_evaluations():
    with pytest.raises(MedftError, match="early_stopping_patience needs evaluations"):
        overrides = ["--early_stopping_patience", "2", "--load_best_model_at_end", "false"]
        parse_recipe(
            FIXTURES / "tiny_vit.yaml", ["--dataset_name", "d", "--output_dir", "o", *overrides]
        )


def test_early_stopping_stops_when_the_metric_stalls_and_keeps_the_best(
    brain_binary, tmp_path, monkeypatch
):
    scores = iter([0.5, 0.8] + [0.6] * 20)  # improves once, then stalls
    monkeypatch.setattr(
        "medft.training.task_metrics", lambda task: lambda prediction: {"macro_f1": next(scores)}
    )
    output = tmp_path / "model"
    run_recipe("tiny_timm.yaml", brain_binary, output, "--num_train_epochs", "8",
               "--early_stopping_patience", "2", "--train_metrics_samples", "0")  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    steps_per_epoch = state["global_step"] // 4
    assert state["epoch"] == 4  # best at 2, then two evaluations without improvement
    best = output / f"checkpoint-{2 * steps_per_epoch}"
    assert state["best_model_checkpoint"] == best.name  # relative to the model folder
    saved, at_best = load_file(output / "model.safetensors"), load_file(best / "model.safetensors")
    assert all(torch.equal(saved[name], at_best[name]) for name in saved)
    last = load_file(output / f"checkpoint-{4 * steps_per_epoch}" / "model.safetensors")
    assert any(not torch.equal(saved[name], last[name]) for name in saved)


class Recorded:
    """The training loss, recording what it scores while gradients flow (training steps)."""

    def __init__(self, loss) -> None:
        self.loss, self.batches = loss, []

    def __getattr__(self, name):
        return getattr(self.loss, name)

    def __call__(self, logits, labels):
        if torch.is_grad_enabled():
            self.batches.append((logits.detach().float().clone(), labels.clone()))
        return self.loss(logits, labels)


def test_the_train_curve_scores_the_epochs_own_augmented_batches(brain_multiclass, tmp_path):
    trainer = trainer_for(brain_multiclass, tmp_path, "tiny_timm.yaml", "--num_train_epochs", "2",
                          "--train_metrics_samples", "0", "--save_strategy", "no",
                          "--load_best_model_at_end", "false")  # fmt: skip
    recorded = trainer.loss = Recorded(trainer.loss)
    trainer.train()
    steps = trainer.state.global_step // 2
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2
    for epoch, entry in enumerate(logged):
        batches = recorded.batches[epoch * steps : (epoch + 1) * steps]
        logits = torch.cat([logits for logits, _ in batches]).numpy()
        labels = torch.cat([labels for _, labels in batches]).numpy()
        assert len(labels) == len(trainer.train_dataset)  # every image of the epoch, once
        expected = trainer.compute_metrics(EvalPrediction(logits, labels))
        assert {f"train_aug_{k}": v for k, v in expected.items()} == pytest.approx(
            {k: v for k, v in entry.items() if k.startswith("train_aug_")}
        )
    assert not any("train_macro_f1" in entry for entry in trainer.state.log_history)


def test_mixed_batches_give_the_train_curve_its_loss_only(brain_multiclass, tmp_path):
    trainer = trainer_for(brain_multiclass, tmp_path, "tiny_timm.yaml", "--mixup_alpha", "0.4",
                          "--train_metrics_samples", "0", "--save_strategy", "no",
                          "--load_best_model_at_end", "false")  # fmt: skip
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 1 and not any(key.startswith("train_aug_") for key in logged[0])


def counting_processor_calls(monkeypatch) -> list[int]:
    """Images through the model's processor (evaluation preprocessing), one entry per call."""
    counts: list[int] = []

    def counting(processor):
        pixels = eval_pixels(processor)
        return lambda images: counts.append(len(images)) or pixels(images)

    monkeypatch.setattr("medft.data.pipeline.eval_pixels", counting)
    return counts


def test_the_validation_split_is_preprocessed_once_for_every_evaluation(
    brain_multiclass, tmp_path, monkeypatch
):
    counts = counting_processor_calls(monkeypatch)
    trainer = trainer_for(brain_multiclass, tmp_path, "tiny_timm.yaml", "--num_train_epochs", "3",
                          "--train_metrics_samples", "0")  # fmt: skip
    validation = trainer.eval_dataset
    trainer.train()  # three evaluations
    for _ in range(2):  # as train() scores it after training: calibration, then the report
        trainer.predict(validation)
    assert sum(counts) == len(validation)


@pytest.mark.parametrize("recipe", ["tiny_timm.yaml", "tiny_vit.yaml"])
def test_kept_validation_pixels_are_the_processors_bit_for_bit(recipe, brain_multiclass, tmp_path):
    trainer, built = trainer_and_model(brain_multiclass, tmp_path, recipe,
                                       "--per_device_eval_batch_size", "7")  # fmt: skip
    kept = trainer.get_eval_dataloader()
    assert kept.dataset.pixels.dtype == torch.uint8  # both processors' output is exact in uint8
    images = trainer.eval_dataset.with_format(None)["image"]
    expected = built.processor(images=[image.convert("RGB") for image in images],
                               return_tensors="pt")["pixel_values"]  # fmt: skip
    loaded = torch.cat([batch["pixel_values"] for batch in kept])
    assert loaded.dtype == torch.float32 and torch.equal(loaded, expected)
