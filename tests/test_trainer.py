"""The techniques reach the Trainer: loss weights, sampler, mixing, optimizer groups, callbacks."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from transformers import (
    AutoModelForImageClassification,
    EarlyStoppingCallback,
    EvalPrediction,
    PreTrainedModel,
)

from medft.data.pipeline import load_data, set_transforms
from medft.data.transforms import eval_pixels
from medft.errors import MedftError
from medft.modeling import build_model, freezing
from medft.modeling.freezing import GradualUnfreezing
from medft.parsing import parse_recipe
from medft.training.build import build_trainer
from medft.training.trainer import MedftTrainer
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


def saved_weights(folder) -> dict[str, torch.Tensor]:
    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def same_weights(one: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
    return one.keys() == other.keys() and all(torch.equal(one[k], other[k]) for k in one)


# tiny_vit: an architecture whose parameters transformers 5 renames on loading
@pytest.mark.parametrize("recipe", ["tiny_timm.yaml", "tiny_vit.yaml"])
def test_early_stopping_stops_when_the_metric_stalls_and_keeps_the_best(
    recipe, brain_binary, tmp_path, monkeypatch
):
    scores = iter([0.5, 0.8] + [0.6] * 20)  # improves once, then stalls
    monkeypatch.setattr(
        "medft.training.build.task_metrics",
        lambda task: lambda prediction: {"macro_f1": next(scores)},
    )
    output = tmp_path / "model"
    run_recipe(recipe, brain_binary, output, "--num_train_epochs", "8",
               "--early_stopping_patience", "2", "--train_metrics_samples", "0")  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    steps_per_epoch = state["global_step"] // 4
    assert state["epoch"] == 4  # best at 2, then two evaluations without improvement
    best = output / f"checkpoint-{2 * steps_per_epoch}"
    assert state["best_model_checkpoint"] == best.name  # relative to the model folder
    saved = saved_weights(output)
    assert same_weights(saved, saved_weights(best))
    assert not same_weights(saved, saved_weights(output / f"checkpoint-{4 * steps_per_epoch}"))


def test_a_resumed_run_starts_from_every_weight_of_its_checkpoint(brain_binary, tmp_path):
    """Checkpoints of an architecture transformers renames on loading reload whole."""
    first = trainer_for(brain_binary, tmp_path / "first", "tiny_vit.yaml",
                        "--num_train_epochs", "1", "--train_metrics_samples", "0")  # fmt: skip
    first.train()
    checkpoint = next((tmp_path / "first").glob("checkpoint-*"))
    resumed = trainer_for(brain_binary, tmp_path / "resumed", "tiny_vit.yaml")
    assert not same_weights(resumed.model.state_dict(), saved_weights(checkpoint))
    resumed._load_from_checkpoint(str(checkpoint))
    assert same_weights(resumed.model.state_dict(), saved_weights(checkpoint))


def fingerprints_of_training_batches(monkeypatch) -> list[tuple]:
    """Each training batch MedftTrainer computes a loss on: its pixels' sum and its labels."""
    seen, compute_loss = [], MedftTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        if model.training:
            pixels = inputs["pixel_values"].double().sum().item()
            seen.append((round(pixels, 3), tuple(inputs["labels"].tolist())))
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(MedftTrainer, "compute_loss", recording)
    return seen


@pytest.mark.parametrize("data_cache", ["none", "device"])
def test_a_run_resumed_mid_epoch_takes_the_batches_the_first_run_took(
    data_cache, brain_binary, tmp_path, monkeypatch
):
    settings = ["--num_train_epochs", "2", "--eval_strategy", "steps", "--eval_steps", "5",
                "--save_strategy", "steps", "--save_steps", "5", "--save_total_limit", "9",
                "--train_metrics_samples", "0", "--sampler", "weighted",
                "--data_cache", data_cache]  # fmt: skip
    if data_cache == "none":  # the workers' crops do not resume: crop (almost) the whole image
        settings += ["--crop_scale", "1.0", "1.0"]
    seen = fingerprints_of_training_batches(monkeypatch)
    first = trainer_for(brain_binary, tmp_path / "first", "tiny_timm.yaml", *settings)
    first.train()
    steps_per_epoch = len(first.get_train_dataloader())
    assert first.state.global_step == 2 * steps_per_epoch and 10 < steps_per_epoch < 15
    uninterrupted = list(seen)[15:]
    seen.clear()
    resumed = trainer_for(brain_binary, tmp_path / "resumed", "tiny_timm.yaml", *settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "first" / "checkpoint-15"))  # epoch 2
    if data_cache == "device":  # its augmentation resumes too: the very same pixels
        assert seen == uninterrupted
    else:  # the same images in the same order; the workers' own random draws do not resume
        assert [labels for _, labels in seen] == [labels for _, labels in uninterrupted]
        sums = [pixels for pixels, _ in uninterrupted]
        assert [pixels for pixels, _ in seen] == pytest.approx(sums, rel=5e-3)


def test_the_training_loader_starts_once_for_all_epochs(brain_binary, tmp_path, monkeypatch):
    """Restarted at each epoch, its workers built the first batch while the model waited."""
    starts, iterate = [], DataLoader.__iter__

    def counting(self):
        starts.append(self.dataset)
        return iterate(self)

    monkeypatch.setattr(DataLoader, "__iter__", counting)
    trainer = trainer_for(brain_binary, tmp_path, "tiny_timm.yaml", "--num_train_epochs", "3",
                          "--data_cache", "none", "--dataloader_num_workers", "1",
                          "--train_metrics_samples", "0")  # fmt: skip
    trainer.train()
    assert trainer.state.epoch == 3
    assert sum(dataset is trainer.train_dataset for dataset in starts) == 1


def test_what_freezing_and_the_model_fix_is_found_once_not_every_step(
    brain_binary, tmp_path, monkeypatch
):
    walks, counts = [], []
    find = freezing.frozen_norms
    monkeypatch.setattr(freezing, "frozen_norms", lambda model: walks.append(1) or find(model))
    count = PreTrainedModel.num_parameters
    monkeypatch.setattr(
        PreTrainedModel,
        "num_parameters",
        lambda self, *a, **k: counts.append(1) or count(self, *a, **k),
    )
    trainer = trainer_for(brain_binary, tmp_path, "tiny_timm.yaml", "--num_train_epochs", "2",
                          "--freeze", "backbone", "--train_metrics_samples", "0")  # fmt: skip
    trainer.train()
    assert trainer.state.global_step > 6
    assert len(walks) == 1 + 2  # at the start, then each epoch (gradual unfreezing's moment)
    assert len(counts) == 1  # the Trainer's FLOPs count, once for the model
    norms = trainer.frozen_norms.norms
    assert norms and all(not norm.training for norm in norms)  # kept after model.train()
    assert float(trainer.state.total_flos) > 0


def test_no_step_waits_for_the_host_by_default(brain_binary, tmp_path):
    trainer = trainer_for(brain_binary, tmp_path)
    assert not trainer.args.logging_nan_inf_filter  # it reads each step's loss on the host
    assert trainer.create_optimizer().defaults["fused"]  # torch's fused AdamW


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("data_cache", ["none", "device", "ram"])
def test_a_training_step_never_makes_the_host_wait_for_the_gpu(data_cache, brain_binary, tmp_path):
    """What the Trainer does each step (take a batch, loss and backward, clip, step, schedule,
    the average's update), with every medft technique that runs per step, under CUDA's check
    that nothing makes the host wait for the device."""
    trainer = trainer_for(
        brain_binary, tmp_path, "tiny_timm.yaml", "--data_cache", data_cache,
        "--class_weighting", "balanced", "--mixup_alpha", "0.2", "--random_erasing", "0.5",
        "--ema_decay", "0.9", "--freeze", "partial", "--unfreeze_last_n", "1",
        "--horizontal_flip", "0.5", "--rotation_degrees", "10", "--zoom", "0.1",
        "--brightness", "0.2", "--contrast", "0.2", "--dataloader_num_workers", "1",
    )  # fmt: skip
    trainer.args.max_steps = 4
    trainer.train()  # warm: the optimizer's state, the EMA and cuDNN's choices exist
    model, loader = trainer.model_wrapped, iter(trainer.get_train_dataloader())
    next(loader)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.training_step(model, next(loader))
            trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
            trainer.optimizer.step()
            trainer.lr_scheduler.step()
            model.zero_grad()
            trainer.ema_callback.on_step_end(
                trainer.args, trainer.state, trainer.control, model=trainer.model
            )
    finally:
        torch.cuda.set_sync_debug_mode("default")


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
    expected = built.processor(
        images=[image.convert("RGB") for image in images], return_tensors="pt"
    )["pixel_values"]
    loaded = torch.cat([batch["pixel_values"] for batch in kept])
    assert loaded.dtype == torch.float32 and torch.equal(loaded, expected)
