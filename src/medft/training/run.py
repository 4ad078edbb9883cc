"""Fine-tuning, top to bottom: data, model, Trainer, train, save, evaluate, card, push.

`train()` is what `accelerate launch src/finetune.py RECIPE` and `medft train RECIPE`
run. Each section is a few lines calling into `medft.data`, `medft.modeling`,
`medft.training.build` (the Trainer) and `medft.evaluation`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from transformers import set_seed

from medft.config import DataArguments, EvaluationOptions, MedftTrainingArguments, ModelArguments
from medft.data.loading import shorter_side
from medft.data.pipeline import TrainingData, input_size_advice, load_data, set_transforms
from medft.errors import MedftError
from medft.evaluation.calibration import TemperatureScaling, fit_temperature, reliability
from medft.evaluation.card import CardFacts, card_settings, model_card
from medft.evaluation.card_base_model import processor_settings
from medft.evaluation.conformal import conformal_coverage, fit_conformal
from medft.evaluation.evaluate import (
    EvaluationReport,
    SplitScores,
    evaluate_scores,
    scores_from_logits,
    subgroup_attributes,
)
from medft.evaluation.external import SplitRecord
from medft.evaluation.plots import CURVES_NAME, plot_training_curves
from medft.evaluation.priors import save_training_labels
from medft.evaluation.reporting import format_evaluation, write_evaluation
from medft.formats.dicom_settings import save_settings
from medft.hub import push_model
from medft.inference.ood import flag_summary
from medft.modeling import BuiltModel, base_model_id, build_model, weights_origin
from medft.modeling.freezing import parameter_table
from medft.modeling.heads import fold_temperature
from medft.modeling.licence import base_licence
from medft.modeling.lora import merged
from medft.parsing import RECIPE_NAME
from medft.progress import quiet_library_bars
from medft.public_names import dataset_name, model_name
from medft.tasks import TaskInfo
from medft.training.build import build_trainer
from medft.training.ema import keep_better_weights
from medft.training.ood_statistics import save_ood_statistics
from medft.training.probe import LinearProbe
from medft.training.run_record import (
    RunRecord,
    checkpoint_to_resume,
    mark_finished,
    recipe_settings,
)
from medft.training.saved_folders import write_training_arguments
from medft.training.sharding import full_state_dict
from medft.training.trainer import MedftTrainer

logger = logging.getLogger("medft")


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
    quiet_library_bars()


def uses_channels_last(setting: bool | None, model: torch.nn.Module) -> bool:
    """The recipe's choice, else on for convolutional networks (a ViT's only convolution is
    its patch embedding)."""
    if setting is not None:
        return setting
    return sum(isinstance(module, torch.nn.Conv2d) for module in model.modules()) > 1


def logits_of(prediction) -> np.ndarray:
    predictions = prediction.predictions
    return predictions[0] if isinstance(predictions, tuple) else predictions


def calibrate(trainer: MedftTrainer, built: BuiltModel, data: TrainingData, how: str):
    """Fit a temperature on the validation split and fold it into the classifier; returns the
    temperatures (None when ``how`` is none)."""
    if how == "none":
        return None
    validation = trainer.predict(data.validation, metric_key_prefix="uncalibrated")
    temperature = fit_temperature(
        logits_of(validation), validation.label_ids, data.task, how == "temperature_per_finding"
    )
    fold_temperature(trainer.model, built.layout.head_module, temperature)
    logger.info(
        "Calibration: temperature %s fitted on the validation split, folded into the classifier",
        np.round(temperature, 4).tolist(),
    )
    return temperature


def save_model(trainer: MedftTrainer, built: BuiltModel, model_args: ModelArguments, output: str):
    """The final model: plain weights, LoRA merged into them, or (if asked) the adapter alone."""
    if built.uses_lora and not model_args.save_adapter_only:
        model = merged(trainer.model)  # by every process: under FSDP, merging takes them all
        weights = full_state_dict(trainer, model)
        if trainer.args.should_save:  # one process writes, as trainer.save_model does
            model.save_pretrained(output, state_dict=weights)
            if trainer.processing_class is not None:
                trainer.processing_class.save_pretrained(output)
            write_training_arguments(trainer.args, Path(output))
    else:
        trainer.save_model(output)


@dataclass
class TrainingResult:
    """What a run found: the evaluation of its test split (else validation), on the process
    that writes (None on the others), the Trainer's test metrics (test_results.json), and the
    validation split's scores (a held-out fold's, in cross-validation)."""

    evaluation: EvaluationReport | None
    test_metrics: dict[str, float]
    validation: SplitScores
    task: TaskInfo
    split_sizes: dict[str, int]


def write_recipe(output: Path, data_args: DataArguments, model_args: ModelArguments) -> None:
    """recipe.json: the data and model settings of the run, which inference reads back (the
    flips test-time augmentation may use). Training settings are in training_args.json."""
    data = dataclasses.asdict(data_args) | {"dataset_name": dataset_name(data_args.dataset_name)}
    model = dataclasses.asdict(model_args) | {
        key: model_name(getattr(model_args, key))
        for key in ("model_name_or_path", "pretrained_weights")
        if getattr(model_args, key)
    }
    content = {"data": data, "model": model}  # names, not paths: the file is pushed
    (output / RECIPE_NAME).write_text(json.dumps(content, indent=2) + "\n")


def evaluated_attributes(
    data: TrainingData, data_args: DataArguments, args: MedftTrainingArguments
) -> dict[str, np.ndarray]:
    """The subgroup attributes of the split evaluated at the end (test, else validation): the
    recipe's subgroups, else the dataset's declared ones; read before training, so that a
    column the split lacks stops the run at once."""
    split = data_args.test_split if data_args.test_split in data.eval_sets else data_args.eval_split
    dataset = data.eval_sets[split]
    return subgroup_attributes(args.subgroups, data_args.dataset_name, dataset, split, "subgroups")


def saved_weights_note(args: MedftTrainingArguments, average_won: bool) -> str | None:
    """What the card says about which weights were saved, when an EMA was kept."""
    if args.ema_decay is None:
        return None
    if average_won:
        return (
            f"the exponential moving average of the weights (decay {args.ema_decay}), "
            "which scored better on the validation split than the raw weights"
        )
    return (
        f"the raw weights, which scored better on the validation split than their "
        f"exponential moving average (decay {args.ema_decay})"
    )


def train(
    data_args: DataArguments, model_args: ModelArguments, training_args: MedftTrainingArguments
) -> TrainingResult:
    """Fine-tune, evaluate and save."""
    ############################
    # Setup logging and seeds
    ############################
    setup_logging(training_args)
    set_seed(training_args.seed)
    push_to = training_args.hub_model_id or Path(training_args.output_dir).name
    push_to = push_to if training_args.push_to_hub else None
    training_args = dataclasses.replace(training_args, push_to_hub=False)  # medft pushes once

    ###############################################
    # Load data, claim output_dir, find a checkpoint
    ###############################################
    data = load_data(data_args, training_args)
    attributes = evaluated_attributes(data, data_args, training_args)
    settings = recipe_settings(data_args, model_args, training_args)
    record = RunRecord.of(settings, data.identity)
    checkpoint = checkpoint_to_resume(training_args, record, data.streamed)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)

    ##########################
    # Model and transforms
    ##########################
    per_finding = training_args.calibration == "temperature_per_finding"
    if per_finding and not data.task.supports_per_finding_temperature:
        raise MedftError(  # here, not after training: the data decides it
            "calibration: temperature_per_finding needs multi-label data; use temperature."
        )
    probe = (
        LinearProbe(data, data_args, model_args, training_args) if training_args.probes else None
    )
    built = build_model(model_args, data.task, start_head=probe.start_head if probe else None)
    if training_args.gradient_checkpointing and not built.model.supports_gradient_checkpointing:
        raise MedftError(
            f"{model_args.model_name_or_path} does not support gradient_checkpointing; remove it."
        )
    if not built.uses_lora:
        logger.info("Parameters per block:\n%s", parameter_table(built.model, built.layout))
    if uses_channels_last(training_args.channels_last, built.model):
        built.model.to(memory_format=torch.channels_last)
    stored_side = shorter_side(data.train_sample, data.task.image_column)
    spec = set_transforms(data, built.processor, data_args)
    advice = input_size_advice(stored_side, spec.size)
    if advice:
        logger.warning("Input size: %s", advice)

    ###############
    # Training loop
    ###############
    trainer = build_trainer(
        data, data_args, model_args, training_args, built, resume_from=checkpoint
    )
    if probe is not None:
        result = probe.train(trainer, checkpoint)
    else:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    history = list(trainer.state.log_history)  # per-epoch logs, before the final evaluations
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    ##################################################
    # Choose the weights (raw or EMA), calibrate them
    ##################################################
    average_won = bool(trainer.ema_callback) and keep_better_weights(
        trainer.model, trainer.ema_callback, trainer.state
    )
    temperature = calibrate(trainer, built, data, training_args.calibration)

    ##########
    # Evaluate
    ##########
    validation = trainer.predict(data.validation, metric_key_prefix="eval")
    validation_metrics = validation.metrics
    trainer.save_metrics("eval", validation_metrics)
    tuning = scores_from_logits(
        data.task, validation.predictions, validation.label_ids, data.validation
    )
    test_metrics: dict[str, float] = {}
    evaluated_split, evaluated, evaluated_logits = (
        data_args.eval_split,
        dataclasses.replace(tuning, attributes=attributes),
        logits_of(validation),
    )
    if data_args.test_split in data.eval_sets:
        test_set = data.eval_sets[data_args.test_split]
        test = trainer.predict(test_set, metric_key_prefix="test")
        test_metrics = test.metrics
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        evaluated_split = data_args.test_split
        evaluated = scores_from_logits(
            data.task, test.predictions, test.label_ids, test_set, attributes
        )
        evaluated_logits = logits_of(test)
    save_model(trainer, built, model_args, training_args.output_dir)
    if data.dicom is not None and trainer.is_world_process_zero():
        save_settings(training_args.output_dir, data.dicom)  # predict reads DICOM files alike

    ###########################
    # Save the curves and card
    ###########################
    report = None
    if trainer.is_world_process_zero():
        output = Path(training_args.output_dir)
        plot_training_curves(history, data.task.main_metric, output / CURVES_NAME)
        options = EvaluationOptions(
            bootstrap_resamples=training_args.bootstrap_resamples,
            threshold_method=training_args.threshold_method,
            progress=not training_args.disable_tqdm,
        )
        ood = None
        if training_args.ood_false_flag_rate is not None and not model_args.save_adapter_only:
            ood = save_ood_statistics(
                output,
                data.train_sample,
                data.validation,
                false_flag_rate=training_args.ood_false_flag_rate,
                device=training_args.device,
                batch_size=training_args.per_device_eval_batch_size,
                num_workers=training_args.dataloader_num_workers,
                seed=training_args.seed,
                evaluated=data.eval_sets.get(evaluated_split, data.validation),
            )
        report = evaluate_scores(
            data.task,
            evaluated,
            split=evaluated_split,
            tuning=tuning,
            tuning_split=data_args.eval_split,
            options=options,
        )
        report.model, report.dataset = model_name(output), dataset_name(data_args.dataset_name)
        if temperature is not None:
            uncalibrated = data.task.probabilities(evaluated_logits * temperature)
            report.temperature = TemperatureScaling(
                temperature.tolist(),
                data_args.eval_split,
                reliability(uncalibrated, evaluated.labels, data.task, options.calibration_bins),
            )
        if training_args.conformal is not None:  # fitted on the validation split's scores
            alpha, split = training_args.conformal, data_args.eval_split
            sets = fit_conformal(
                data.task, tuning.probs, tuning.labels, alpha, split, report.dataset
            )
            sets.save(output, data.task)
            where = (report.dataset, evaluated_split)
            report.conformal = conformal_coverage(sets, data.task, evaluated, where, options)
        flagged = None
        if ood is not None:
            statistics, distances = ood
            report.ood = flag_summary(statistics, distances)
            flagged = statistics.flagged(distances)
        write_evaluation(report, data.task, evaluated, output)
        if evaluated_split == data_args.test_split:  # kept for comparisons with other sites
            split, fingerprint = evaluated_split, data.identity["fingerprints"][evaluated_split]
            record = SplitRecord.of(evaluated, data.task, split, report.dataset, fingerprint)
            dataclasses.replace(record, flagged=flagged).save(output)
        write_recipe(output, data_args, model_args)
        save_training_labels(output, data.task, data.train_labels)  # for --prior-shift
        logger.info("Evaluation:\n%s", format_evaluation(report, output))
        facts = CardFacts(
            model_name_or_path=model_args.model_name_or_path,
            base_model=base_model_id(model_args),
            weights_origin=weights_origin(model_args),
            dataset_name=data_args.dataset_name,
            task=data.task,
            split_sizes=data.split_sizes(),
            hyperparameters=card_settings(model_args, data_args, training_args),
            test_metrics=test_metrics,
            validation_metrics=validation_metrics,
            evaluation=report,
            image_size=spec.size,
            repo_id=push_to,
            extra_tags=[*built.family.card_tags] + ["lora"] * built.uses_lora,
            saved_weights=saved_weights_note(training_args, average_won),
            base_licence=base_licence(model_args, built.family.config_licence(built.model.config)),
            preprocessing=processor_settings(built.family, built.processor),
        )
        model_card(facts).save(output / "README.md")
        mark_finished(output)

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
    return TrainingResult(report, test_metrics, tuning, data.task, data.split_sizes())
