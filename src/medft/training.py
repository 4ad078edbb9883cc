"""Fine-tuning, top to bottom: data, model, Trainer, train, save, evaluate, card, push.

`train()` is what `accelerate launch src/finetune.py RECIPE` and `medft train RECIPE`
run. Each section is a few lines calling into `medft.data`, `medft.modeling`,
`medft.metrics` and `medft.reporting`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import datasets
import transformers
from datasets import Dataset
from huggingface_hub import HfApi
from transformers import Trainer, set_seed
from transformers.trainer_utils import get_last_checkpoint

from medft.config import AUTO, DataArguments, MedftTrainingArguments, ModelArguments
from medft.data.loading import TaskInfo, load_training_data
from medft.data.transforms import batch_transform, collate, eval_pixels, input_spec, train_pixels
from medft.errors import MedftError
from medft.metrics import task_metrics
from medft.modeling import base_model_id, build_model
from medft.reporting import (
    CURVES_NAME,
    HYPERPARAMETERS,
    CardFacts,
    model_card,
    plot_training_curves,
)

logger = logging.getLogger("medft")
NOT_PUSHED = ("checkpoint-*", "runs/*", "*.pt")


class MedftTrainer(Trainer):
    """A `Trainer` that, after each periodic evaluation, also scores a fixed training sample.

    The sample goes through the evaluation transforms, so the curves compare
    train and validation on equal terms; its metrics are logged as ``train_*``.
    """

    def __init__(self, *args: Any, train_probe: Dataset | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_probe = train_probe

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is None and self.train_probe is not None:
            probe = self.predict(self.train_probe, ignore_keys, metric_key_prefix="train")
            skip = ("_loss", "_runtime", "_per_second")
            self.log({k: v for k, v in probe.metrics.items() if not k.endswith(skip)})
        return metrics


def setup_logging(args: MedftTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = args.get_process_log_level()
    logger.setLevel(logging.INFO if args.should_log else logging.WARNING)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def checkpoint_to_resume(args: MedftTrainingArguments) -> str | None:
    """The checkpoint named by ``resume_from_checkpoint``, else the last one in ``output_dir``."""
    if args.resume_from_checkpoint:
        if not Path(args.resume_from_checkpoint).is_dir():
            raise MedftError(
                f"resume_from_checkpoint {args.resume_from_checkpoint} does not exist."
            )
        return args.resume_from_checkpoint
    if Path(args.output_dir).is_dir():
        return get_last_checkpoint(args.output_dir)
    return None


def resolve_best_metric(args: MedftTrainingArguments, task: TaskInfo) -> MedftTrainingArguments:
    """Replace `metric_for_best_model: auto` by the task's main metric."""
    if args.metric_for_best_model != AUTO:
        return args
    return dataclasses.replace(args, metric_for_best_model=task.main_metric, greater_is_better=True)


def limit(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    return dataset.shuffle(seed=seed).select(range(min(n, len(dataset)))) if n else dataset


def files_to_push(output_dir: str | Path) -> list[str]:
    """The files of a finished run that go to the Hub: everything but checkpoints and logs."""
    root = Path(output_dir)
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file()
        and not any(path.relative_to(root).match(pattern) for pattern in NOT_PUSHED)
        and not path.relative_to(root).parts[0].startswith(("checkpoint-", "runs"))
    )


def push_model(output_dir: str | Path, repo_id: str, *, private: bool | None, token: str | None):
    """Upload the model, its processor settings, card, metrics and plots to ``repo_id``."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(output_dir),
        repo_id=repo_id,
        allow_patterns=files_to_push(output_dir),
        commit_message="Upload model trained with medft",
    )
    return url


def train(
    data_args: DataArguments, model_args: ModelArguments, training_args: MedftTrainingArguments
) -> dict[str, float]:
    """Fine-tune, evaluate and save; returns the test metrics (empty without a test split)."""
    ############################
    # Setup logging and seeds
    ############################
    setup_logging(training_args)
    set_seed(training_args.seed)
    push_to = training_args.hub_model_id or Path(training_args.output_dir).name
    push_to = push_to if training_args.push_to_hub else None
    training_args = dataclasses.replace(training_args, push_to_hub=False)  # medft pushes once

    ###############################
    # Detect the last checkpoint
    ###############################
    checkpoint = checkpoint_to_resume(training_args)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)

    ###############
    # Load data
    ###############
    splits = (data_args.train_split, data_args.eval_split, data_args.test_split)
    dataset, task = load_training_data(
        data_args.dataset_name,
        config=data_args.dataset_config,
        splits=splits,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
    )
    train_set = limit(
        dataset[data_args.train_split], data_args.max_train_samples, training_args.seed
    )
    eval_sets = {
        split: limit(dataset[split], data_args.max_eval_samples, training_args.seed)
        for split in splits[1:]
        if split in dataset
    }
    probe_size = training_args.train_metrics_samples
    train_probe = limit(train_set, probe_size, training_args.seed) if probe_size else None
    logger.info(
        "Task: %s, %d labels; %d training images", task.task, len(task.label_names), len(train_set)
    )

    ################
    # Load model
    ################
    model, processor = build_model(model_args, task)
    if training_args.gradient_checkpointing and not model.supports_gradient_checkpointing:
        raise MedftError(
            f"{model_args.model_name_or_path} does not support gradient_checkpointing; remove it."
        )

    ##################
    # Transforms
    ##################
    spec = input_spec(processor)
    train_set.set_transform(batch_transform(train_pixels(spec), task))
    for part in [*eval_sets.values(), *([train_probe] if train_probe else [])]:
        part.set_transform(batch_transform(eval_pixels(processor), task))

    ########################
    # Initialize the Trainer
    ########################
    training_args = resolve_best_metric(training_args, task)
    trainer = MedftTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_sets[data_args.eval_split],
        data_collator=collate,
        compute_metrics=task_metrics(task),
        processing_class=None if model_args.is_timm else processor,
        train_probe=train_probe,
    )

    ###############
    # Training loop
    ###############
    result = trainer.train(resume_from_checkpoint=checkpoint)
    history = list(trainer.state.log_history)  # per-epoch logs, before the final evaluations
    trainer.save_model(training_args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    ##########
    # Evaluate
    ##########
    validation_metrics = trainer.evaluate(eval_sets[data_args.eval_split], metric_key_prefix="eval")
    trainer.save_metrics("eval", validation_metrics)
    test_metrics: dict[str, float] = {}
    if data_args.test_split in eval_sets:
        test_metrics = trainer.evaluate(eval_sets[data_args.test_split], metric_key_prefix="test")
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)

    ###########################
    # Save the curves and card
    ###########################
    if trainer.is_world_process_zero():
        output = Path(training_args.output_dir)
        plot_training_curves(history, task.main_metric, output / CURVES_NAME)
        facts = CardFacts(
            model_name_or_path=model_args.model_name_or_path,
            base_model=base_model_id(model_args),
            dataset_name=data_args.dataset_name,
            task=task,
            split_sizes={"train": len(train_set)} | {s: len(d) for s, d in eval_sets.items()},
            hyperparameters={key: getattr(training_args, key) for key in HYPERPARAMETERS},
            test_metrics=test_metrics,
            validation_metrics=validation_metrics,
            image_size=spec.size,
            repo_id=push_to,
            extra_tags=["timm"] if model_args.is_timm else [],
        )
        model_card(facts).save(output / "README.md")

        #################
        # Push to the Hub
        #################
        if push_to:
            url = push_model(
                output,
                push_to,
                private=training_args.hub_private_repo,
                token=training_args.hub_token,
            )
            logger.info("Pushed to %s", url)
    return test_metrics
