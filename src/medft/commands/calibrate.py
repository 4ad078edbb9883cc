"""`medft calibrate`: temperature scaling of a saved model, folded into its weights.

A temperature (one, or one per finding of a multi-label model) is fitted on the
validation split's logits, then divided into the classifier's last linear layer, so
the saved model's plain `pipeline()` returns the calibrated probabilities with no
extra code. The model is then evaluated again (thresholds re-tuned on the calibrated
scores), with the reliability before and after in metrics.json and the model card.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from medft.config.evaluation import (
    CalibrateArguments,
    EvaluateArguments,
    EvaluationOptions,
    ScoringOptions,
)
from medft.errors import MedftError
from medft.evaluation.calibration import TemperatureScaling, fit_temperature, reliability
from medft.evaluation.card import replace_results
from medft.evaluation.evaluate import EvaluationReport, evaluate_model, split_scores
from medft.evaluation.reporting import write_evaluation
from medft.inference.classifier import load_classifier
from medft.inference.inputs import labelled_dataset
from medft.inference.reading import ImageReader
from medft.inference.scoring import score_images
from medft.modeling.families import family_of
from medft.modeling.heads import fold_temperature

CARD_NAME = "README.md"


def evaluation_of(model: Path, options: CalibrateArguments) -> EvaluateArguments:
    """`medft evaluate`'s options for the calibrated ``model``: the split, the tuning split,
    the evaluation and the scoring of ``options``."""
    shared = dataclasses.fields(EvaluationOptions) + dataclasses.fields(ScoringOptions)
    return EvaluateArguments(
        model=[model],
        dataset=options.dataset,
        split=options.split,
        tune_split=options.tune_split,
        **{item.name: getattr(options, item.name) for item in shared},
    )


def calibrate_model(options: CalibrateArguments) -> tuple[EvaluationReport, Path]:
    """Fit, fold, save, evaluate; returns the new evaluation and where the model now is."""
    dataset, task = labelled_dataset(
        options.dataset, options.model, options.tune_split, options.split
    )
    if options.per_finding and not task.supports_per_finding_temperature:
        raise MedftError("--per-finding is for multi-label models; leave it out.")
    classifier = load_classifier(options.model)
    tuning = dataset[options.tune_split]
    reader = ImageReader(classifier, splits=[tuning])
    logits, errors = score_images(
        classifier,
        reader,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        logits=True,
    )
    readable = np.array([row not in errors for row in range(len(tuning))], dtype=bool)
    labels = task.encode(list(tuning[task.label_column]))
    temperature = fit_temperature(logits[readable], labels[readable], task, options.per_finding)
    before, _ = split_scores(
        [classifier], dataset[options.split], task, options.batch_size, options.num_workers
    )

    output = Path(options.output or options.model)
    if output.resolve() != Path(options.model).resolve():
        shutil.copytree(
            options.model,
            output,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("checkpoint-*", "runs"),
        )
    classifier_name = family_of(classifier.model).classifier_name(classifier.model)
    fold_temperature(classifier.model, classifier_name, temperature)
    classifier.model.save_pretrained(output)

    report, scores = evaluate_model(evaluation_of(output, options))
    reliability_before = reliability(before.probs, before.labels, task, options.calibration_bins)
    report.temperature = TemperatureScaling(
        temperature.tolist(), options.tune_split, reliability_before
    )
    write_evaluation(report, task, scores, output)
    card = output / CARD_NAME
    if card.is_file():
        card.write_text(replace_results(card.read_text(), report))
    return report, output
