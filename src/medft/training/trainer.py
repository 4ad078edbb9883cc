"""`MedftTrainer`: the transformers `Trainer` with the fine-tuning techniques medft offers.

Each override is one technique: `compute_loss` (the float half of the training
transform on the device, class-weighted or smoothed loss, MixUp / CutMix, frozen
batch norms kept in eval mode), `create_optimizer`
(layer-wise learning-rate decay, and room for gradual unfreezing),
`create_scheduler` (exponential decay), `_get_train_sampler` (each epoch's draw seeded by
the epoch; oversampling), `get_train_dataloader` (one iterator across epochs, from loader
workers or from the images held in memory: `medft.data.stream`; a streamed split's passes:
`medft.data.streamed`, whose position `_save_checkpoint` saves and `get_resumed_dataloader`
restores), `log` (the train curve:
the training batches' own scores, `medft.training.running_scores`), `get_eval_dataloader` /
`get_test_dataloader` (the validation split preprocessed once, `medft.data.preprocessed`),
`evaluate` (the moving average of the weights beside the raw ones, and optionally a
training sample re-scored beside validation).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader, Subset
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, seed_worker

from medft.data.batch_augment import BatchAugment
from medft.data.cache import ImageCache, cached_batches
from medft.data.mixing import BatchMixer
from medft.data.preprocessed import preprocess_once
from medft.data.sampling import (
    EpochBatches,
    EpochRandomSampler,
    EpochWeightedSampler,
    data_seed,
    shard_rows,
)
from medft.data.stream import EpochStream, loader_batches
from medft.data.streamed import StreamLoader
from medft.data.transforms import DeviceTransform
from medft.modeling.freezing import FrozenNorms
from medft.modeling.layout import BlockLayout
from medft.modeling.lora import name_the_base_model
from medft.public_names import path_within
from medft.tasks import TaskInfo
from medft.training.ema import SELECTED_IS_EMA, EmaCallback, selected_metric, weights_of
from medft.training.losses import ClassificationLoss
from medft.training.optim import exponential_decay, parameter_groups
from medft.training.running_scores import RunningScores
from medft.training.saved_folders import in_memory_names, write_training_arguments
from medft.training.sharding import fsdp_plugin, full_state_dict

logger = logging.getLogger("medft")

RUN_STATS = ("_runtime", "_per_second")  # timings, not metrics


class MedftTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        loss: ClassificationLoss,
        layout: BlockLayout,
        mixer: BatchMixer | None = None,
        sample_weights: torch.Tensor | None = None,
        all_parameters_in_optimizer: bool = False,
        train_probe: Dataset | None = None,
        ema: EmaCallback | None = None,
        device_transform: DeviceTransform | None = None,
        image_cache: ImageCache | None = None,
        batch_augment: BatchAugment | None = None,
        task: TaskInfo | None = None,
        stream_transform: Any = None,
        resume_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stream_transform, self.resume_from = stream_transform, resume_from
        self.stream_loader: StreamLoader | None = None
        self.loss, self.layout, self.mixer = loss, layout, mixer
        self.sample_weights = sample_weights
        self.all_parameters_in_optimizer = all_parameters_in_optimizer
        self.train_probe = train_probe
        self.model_accepts_loss_kwargs = False  # compute_loss returns a per-batch mean
        self.ema_callback, self.ema_metrics = ema, None
        self.device_transform = device_transform
        self.image_cache, self.batch_augment = image_cache, batch_augment
        self.frozen_norms = FrozenNorms()
        self.add_callback(self.frozen_norms)  # last: after gradual unfreezing
        self.parameter_count: tuple[torch.nn.Module, int] | None = None
        if ema is not None:
            self.compute_metrics = self.with_selection(self.compute_metrics)
        self.running_scores = None
        self.validation_inputs = None  # the eval dataset preprocessed, once evaluated
        if mixer is not None:
            logger.info(
                "Train curve: the loss only (metrics of MixUp / CutMix targets mean nothing); "
                "train_metrics_samples re-scores a training sample instead."
            )
        elif task is not None:
            self.running_scores = RunningScores(task)

    def with_selection(self, compute_metrics):
        """``compute_metrics`` plus, while the average's metrics are known, the better of the
        raw and average weights' main metric (what picks the best epoch) and which won."""
        metric = self.args.metric_for_best_model.removeprefix("eval_").removeprefix("selected_")

        def compute(prediction):
            metrics = compute_metrics(prediction)
            if self.ema_metrics is not None:
                raw, average = metrics[metric], self.ema_metrics[f"eval_ema_{metric}"]
                won = average > raw if self.args.greater_is_better else average < raw
                metrics[selected_metric(metric)] = average if won else raw
                metrics[SELECTED_IS_EMA] = float(won)
            return metrics

        return compute

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """As the Trainer saves (final model and checkpoints), with the training arguments as
        redacted JSON instead of the pickled ``training_args.bin``, and a LoRA adapter's local
        base model by name. A checkpoint keeps the model's own parameter names (see
        `in_memory_names`)."""
        folder = Path(output_dir or self.args.output_dir)
        if folder.name.startswith(PREFIX_CHECKPOINT_DIR):
            with in_memory_names(self.model):
                super()._save(output_dir, state_dict)
        else:
            super()._save(output_dir, state_dict)
        if self.args.should_save:
            write_training_arguments(self.args, Path(output_dir or self.args.output_dir))
            name_the_base_model(Path(output_dir or self.args.output_dir))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As the Trainer saves, except under FSDP: a checkpoint's folder made by every process
        first (the Trainer writes the shards only after each process has checked whether the
        best checkpoint's folder exists: a race that can leave the processes disagreeing), and
        the final model the whole weights gathered from the shards (the Trainer saves none
        with SHARDED_STATE_DICT)."""
        if fsdp_plugin(self) is None:
            super().save_model(output_dir, _internal_call)
        elif _internal_call:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            super().save_model(output_dir, _internal_call)
        elif self.args.should_save:
            self._save(output_dir, state_dict=full_state_dict(self))
        else:
            full_state_dict(self)  # the gathering takes every process

    def save_state(self) -> None:
        """As the Trainer saves it, with the best checkpoint relative to output_dir
        ('checkpoint-40'): the final folder is pushed, and paths may name patients. The
        checkpoints' own states, which resuming reads, keep the full path."""
        if not self.is_world_process_zero():
            return
        best = self.state.best_model_checkpoint
        state = dataclasses.replace(
            self.state, best_model_checkpoint=best and path_within(best, self.args.output_dir)
        )
        state.save_to_json(str(Path(self.args.output_dir) / TRAINER_STATE_NAME))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        pixel_values = inputs["pixel_values"]
        if pixel_values.dtype == torch.uint8:  # a training batch, as the loader workers left it
            pixel_values = self.device_transform(pixel_values)
        if model.training:
            self.frozen_norms.keep_in_eval()
            if self.mixer is not None:
                pixel_values, labels = self.mixer(pixel_values, labels)
        outputs = model(pixel_values=pixel_values)
        loss = self.loss(outputs.logits, labels)
        if model.training and self.running_scores is not None:
            self.running_scores.add(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        """Layer-wise learning rates, and every parameter held from the start when blocks will
        be unfrozen during training; otherwise the Trainer's own optimizer."""
        decay = self.args.layer_decay
        if self.optimizer is not None or (decay is None and not self.all_parameters_in_optimizer):
            return super().create_optimizer(model)
        model = self.model if model is None else model
        groups = parameter_groups(
            model.named_parameters(),
            self.layout,
            learning_rate=self.args.learning_rate,
            weight_decay=self.args.weight_decay,
            decayed=set(self.get_decay_parameter_names(model)),
            layer_decay=decay or 1.0,
        )
        optimizer_class, settings = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_class(groups, **settings)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.exponential_decay:
            self.lr_scheduler = exponential_decay(
                optimizer or self.optimizer,
                warmup_steps=self.args.get_warmup_steps(num_training_steps),
                decay_rate=self.args.lr_decay_rate,
                decay_steps=self.args.lr_decay_steps,
                staircase=self.args.lr_decay_staircase,
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """The Trainer's count (6 x input values x parameters), with the parameters counted
        once per model rather than at every step."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if self.parameter_count is None or self.parameter_count[0] is not self.model:
            count = self.model.num_parameters(exclude_embeddings=True)
            self.parameter_count = (self.model, count)
        return 6 * inputs[main_input].numel() * self.parameter_count[1]

    def _get_train_sampler(self, train_dataset=None):
        """Each epoch's order of ``train_dataset`` (a `Subset`: this process's shard), drawn
        with a generator seeded by (data seed, epoch): a permutation, or rows drawn by their
        weights with `sampler: weighted`."""
        rows = self.train_dataset if train_dataset is None else train_dataset
        seed = data_seed(self.args)
        if self.sample_weights is None:
            return EpochRandomSampler(rows, seed)
        weights = self.sample_weights
        return EpochWeightedSampler(
            weights[rows.indices] if isinstance(rows, Subset) else weights, seed
        )

    def get_train_dataloader(self) -> EpochStream:
        """One iterator across epochs (`EpochStream`) over this process's shard of the split:
        from the images held in memory (`image_cache`), augmented on the training device, or
        from loader workers. Each process takes ceil(images / processes) images an epoch.

        The Trainer's own loader is rebuilt by `accelerate.prepare` (sharding by batches,
        device placement) and restarted every epoch; this one shards itself, by fixed
        parts (`shard_rows`, which the cache holds), and places batches itself. A streamed
        split is read by a `StreamLoader` instead."""
        args, dataset = self.args, self.train_dataset
        if isinstance(dataset, IterableDataset):
            return self.streamed_loader()
        rows = (
            self.image_cache.rows
            if self.image_cache is not None
            else shard_rows(len(dataset), data_seed(args), args.world_size, args.process_index)
        )
        shard = dataset if len(rows) == len(dataset) else Subset(dataset, rows)
        batches = EpochBatches(
            self._get_train_sampler(shard),
            per_epoch=math.ceil(len(dataset) / args.world_size),
            batch_size=self._train_batch_size,
            drop_last=args.dataloader_drop_last,
        )
        if self.image_cache is not None:
            open_at = cached_batches(
                self.image_cache,
                batches,
                self.batch_augment,
                args.device,
                data_seed(args),
                args.process_index,
            )
        else:
            open_at = loader_batches(self.worker_loader(shard, batches), batches, args.device)
        return EpochStream(open_at, batches.batches_per_epoch, dataset).start()

    def worker_loader(self, shard, batches: EpochBatches) -> DataLoader:
        """The loader whose workers decode and augment ``shard`` as ``batches`` say, set as
        the Trainer sets its own."""
        args = self.args
        return DataLoader(
            shard,
            batch_sampler=batches,
            collate_fn=self.data_collator,
            persistent_workers=args.dataloader_persistent_workers,
            worker_init_fn=partial(
                seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index
            ),
            **self.loader_settings(),
        )

    def loader_settings(self) -> dict[str, Any]:
        """The loader workers' settings, as the Trainer sets its own loader's."""
        args = self.args
        workers = args.dataloader_num_workers
        return {
            "num_workers": workers,
            "pin_memory": args.dataloader_pin_memory and args.device.type == "cuda",
            "prefetch_factor": args.dataloader_prefetch_factor if workers else None,
            "multiprocessing_context": args.dataloader_multiprocessing_context,
            "in_order": args.dataloader_in_order,
        }

    def streamed_loader(self) -> StreamLoader:
        """Passes over this process's part of the streamed split, from loader workers set as
        the Trainer sets its own (they restart each pass: `datasets` hands each its shards)."""
        args = self.args
        self.stream_loader = StreamLoader(
            self.train_dataset,
            self.stream_transform,
            batch_size=self._train_batch_size,
            device=args.device,
            rank=args.process_index,
            processes=args.world_size,
            loader_settings=self.loader_settings(),
        )
        return self.stream_loader

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """The same stream, its epoch starting ``num_batches`` in (drawn, not decoded); a
        streamed split where the checkpoint resumed from left it."""
        if isinstance(dataloader, StreamLoader):
            return dataloader.resume(Path(self.resume_from))
        return dataloader.skipping(num_batches)

    def _save_checkpoint(self, model, trial) -> None:
        """As the Trainer saves a checkpoint, with this process's position in a streamed
        split."""
        super()._save_checkpoint(model, trial)
        if self.stream_loader is not None:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.stream_loader.save_position(Path(self._get_output_dir(trial)) / folder)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The training log (its running loss) with the task's metrics of the same batches."""
        if "loss" in logs and self.running_scores is not None:
            logs = logs | self.running_scores.metrics()
        super().log(logs, start_time)

    def get_eval_dataloader(self, eval_dataset=None):
        return super().get_eval_dataloader(self.kept_inputs(eval_dataset))

    def get_test_dataloader(self, test_dataset):
        return super().get_test_dataloader(self.kept_inputs(test_dataset))

    def kept_inputs(self, dataset):
        """The validation split (the eval dataset) preprocessed once, at its first evaluation,
        when it fits ``eval_cache_gb``; any other split as given."""
        dataset = self.eval_dataset if dataset is None else dataset
        if dataset is not self.eval_dataset or not self.args.eval_cache_gb:
            return dataset
        if self.validation_inputs is None:
            spec = self.device_transform.spec if self.device_transform else None
            kept = preprocess_once(
                dataset,
                spec,
                name="Validation",
                batch_size=self.args.eval_batch_size,
                workers=self.args.dataloader_num_workers,
                budget_gb=self.args.eval_cache_gb,
            )
            self.validation_inputs = kept or dataset
        return self.validation_inputs

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        if self.ema_callback is not None and eval_dataset is None:
            with weights_of(self.model, self.ema_callback.ema.module):
                output = self.evaluation_loop(
                    self.get_eval_dataloader(),
                    "EMA evaluation",
                    ignore_keys=ignore_keys,
                    metric_key_prefix="eval_ema",
                )
            self.ema_metrics = output.metrics
            self.log({k: v for k, v in output.metrics.items() if not k.endswith(RUN_STATS)})
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self.ema_metrics = None
        if eval_dataset is None and self.train_probe is not None:
            probe = self.predict(self.train_probe, ignore_keys, metric_key_prefix="train")
            self.log(
                {k: v for k, v in probe.metrics.items() if not k.endswith(("_loss", *RUN_STATS))}
            )
        return metrics
