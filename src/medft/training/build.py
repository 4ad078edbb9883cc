"""`build_trainer`: the `MedftTrainer` a recipe asks for, with its loss, batch mixing,
sampling, callbacks, image cache, the metric that picks the best epoch and (under FSDP) its
shard units."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from transformers import EarlyStoppingCallback, EvalPrediction, TrainerCallback

from medft.config import AUTO, DataArguments, MedftTrainingArguments, ModelArguments
from medft.config.probe import LINEAR_PROBE
from medft.data.batch_augment import BatchAugment
from medft.data.cache import image_cache
from medft.data.mixing import BatchMixer
from medft.data.pipeline import TrainingData
from medft.data.transforms import DeviceTransform, collate
from medft.modeling import BuiltModel
from medft.modeling.freezing import GradualUnfreezing
from medft.tasks import TaskInfo
from medft.training.ema import EmaCallback, selected_metric
from medft.training.losses import build_loss, sampling_weights
from medft.training.sharding import shard_by_blocks
from medft.training.trainer import MedftTrainer


def resolve_best_metric(args: MedftTrainingArguments, task: TaskInfo) -> MedftTrainingArguments:
    """Replace `metric_for_best_model: auto` by the task's main metric; with an EMA of the
    weights, the better of the raw and average weights' value of it."""
    metric, settings = args.metric_for_best_model, {}
    if metric == AUTO:
        metric, settings = task.main_metric, {"greater_is_better": True}
    if args.ema_decay is not None:
        metric = selected_metric(metric.removeprefix("eval_"))
    if metric == args.metric_for_best_model:
        return args
    return dataclasses.replace(args, metric_for_best_model=metric, **settings)


def task_metrics(task: TaskInfo) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics`: the task's metrics on its probabilities, so the training
    logs, `test_results.json` and the model card agree."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        return task.metrics(task.probabilities(logits), prediction.label_ids)

    return compute


def technique_callbacks(model_args: ModelArguments, args: MedftTrainingArguments, layout):
    callbacks: list[TrainerCallback] = []
    if args.early_stopping_patience:
        callbacks.append(
            EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold)
        )
    if model_args.gradual_unfreeze_epochs:
        callbacks.append(GradualUnfreezing(layout, model_args))
    return callbacks


def build_trainer(
    data: TrainingData,
    data_args: DataArguments,
    model_args: ModelArguments,
    args: MedftTrainingArguments,
    built: BuiltModel,
    model_init: Callable[[Any], Any] | None = None,
    resume_from: str | None = None,
) -> MedftTrainer:
    """The Trainer with the loss, mixing, sampling and callbacks the recipe asks for.

    With ``model_init`` (hyper-parameter search) each trial builds its own model;
    ``built`` then only provides the processor and the block layout.
    """
    task = data.task
    mixer = None
    if data_args.mixup_alpha or data_args.cutmix_alpha:
        mixer = BatchMixer(
            task, data_args.mixup_alpha, data_args.cutmix_alpha, data_args.mix_probability
        )
    weights = None
    if args.sampler == "weighted":
        weights = sampling_weights(task, data.train_labels)
    ema = EmaCallback(args.ema_decay, resume_from) if args.ema_decay is not None else None
    spec = built.family.input_spec(built.processor)
    cache = None
    # a linear probe runs no epoch over the images; a stream's loader workers decode it
    if args.training_mode != LINEAR_PROBE and not data.streamed:
        cache = image_cache(data.train_set, task, data.dicom, data_args, args, spec)
    trainer = MedftTrainer(
        model=None if model_init else built.model,
        model_init=model_init,
        args=resolve_best_metric(args, task),
        train_dataset=data.train_set,
        eval_dataset=data.validation,
        data_collator=collate,
        compute_metrics=task_metrics(task),
        processing_class=built.family.processing_class(built.processor),
        callbacks=technique_callbacks(model_args, args, built.layout) + [ema] * bool(ema),
        loss=build_loss(
            task, data.train_labels, args.class_weighting, args.label_smoothing_factor, args
        ),
        layout=built.layout,
        mixer=mixer,
        sample_weights=weights,
        all_parameters_in_optimizer=bool(model_args.gradual_unfreeze_epochs),
        train_probe=data.train_probe,
        ema=ema,
        device_transform=DeviceTransform(spec, data_args.random_erasing),
        image_cache=cache,
        batch_augment=BatchAugment(spec, data_args) if cache is not None else None,
        task=task,  # the train curve: its metrics on the training batches
        stream_transform=data.train_transform if data.streamed else None,
        resume_from=resume_from,
    )
    shard_by_blocks(trainer, built.model, built.layout)
    return trainer
