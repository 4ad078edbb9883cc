"""`medft calibrate`: a saved model re-fitted on a labelled (local) sample, folded into its
weights.

A temperature (one, or one per finding of a multi-label model) is fitted on the
--tune-split's logits, then divided into the classifier's last linear layer, so the saved
model's plain `pipeline()` returns the calibrated probabilities with no extra code. With
--prior-shift, the sample's label prevalence against the training's is added to the layer's
bias (`medft.evaluation.priors`; the temperature is fitted with the shift in place). With
--conformal ALPHA (or when the model already had conformal.json, at its alpha), conformal
prediction sets are fitted on the saved model's scores of the sample. The model is then
evaluated on --split, never the fitting sample (thresholds re-tuned on the fitting sample's
new scores), with the reliability before and after in metrics.json, and the sample and what
changed in local_fit.json and the model card (`medft.evaluation.local_fit`).
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
from medft.evaluation.conformal import CONFORMAL_NAME, fit_conformal, load_conformal
from medft.evaluation.evaluate import EvaluationReport
from medft.evaluation.local_fit import LocalFit, fitting_history, record_fit, with_section
from medft.evaluation.priors import prior_shift, training_prevalence
from medft.evaluation.reporting import write_evaluation
from medft.evaluation.saved_models import evaluate_model, split_scores
from medft.inference.classifier import load_classifier, stored_thresholds
from medft.inference.inputs import labelled_dataset
from medft.inference.label_map import read_label_map
from medft.inference.reading import ImageReader
from medft.inference.scoring import score_images
from medft.modeling.families import family_of
from medft.modeling.heads import fold_prior_shift, fold_temperature
from medft.public_names import dataset_name

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
        label_map=options.label_map,
        **{item.name: getattr(options, item.name) for item in shared},
    )


def calibrate_model(options: CalibrateArguments) -> tuple[EvaluationReport, Path, LocalFit]:
    """Fit, fold, save, evaluate; returns the new evaluation, where the model now is, and
    what was fitted on which sample."""
    label_map = read_label_map(options.label_map)
    dataset, task = labelled_dataset(
        options.dataset, options.model, options.tune_split, options.split, label_map=label_map
    )
    if options.per_finding and not task.supports_per_finding_temperature:
        raise MedftError("--per-finding is for multi-label models; leave it out.")
    if options.prior_shift:
        training_prevalence(options.model, task)  # an older model lacks it: said before scoring
    classifier = load_classifier(options.model)
    given = load_conformal(options.model, task)
    alpha = options.conformal or (given.alpha if given else None)
    thresholds_before = stored_thresholds(classifier, None)
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
    values = list(tuning[task.label_column])
    labels = task.encode(values)[readable]
    local = [value for value, kept in zip(values, readable) if kept]
    shift = prior_shift(task, options.model, local) if options.prior_shift else None
    logits = logits[readable]
    temperature = fit_temperature(
        logits, labels, task, options.per_finding, None if shift is None else shift.shift
    )
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
    if shift is not None:
        fold_prior_shift(classifier.model, classifier_name, shift.shift)
    classifier.model.save_pretrained(output)
    fitted, _ = split_scores([classifier], tuning, task, options.batch_size, options.num_workers)
    (output / CONFORMAL_NAME).unlink(missing_ok=True)  # fitted to the scores before
    if alpha is not None:
        name = dataset_name(options.dataset)
        sets = fit_conformal(task, fitted.probs, fitted.labels, alpha, options.tune_split, name)
        sets.save(output, task)

    report, scores = evaluate_model(evaluation_of(output, options))
    reliability_before = reliability(before.probs, before.labels, task, options.calibration_bins)
    report.temperature = TemperatureScaling(
        temperature.tolist(), options.tune_split, reliability_before
    )
    write_evaluation(report, task, scores, output)
    bins = options.calibration_bins
    fit = LocalFit(
        dataset=dataset_name(options.dataset),
        split=options.tune_split,
        images=len(labels),
        temperature=temperature.tolist(),
        ece_before=reliability(task.probabilities(logits), labels, task, bins).ece,
        ece_after=reliability(fitted.probs, fitted.labels, task, bins).ece,
        prior_shift=None if shift is None else shift.to_json(task),
        thresholds_before=thresholds_before.values if thresholds_before else None,
        thresholds_after=report.thresholds.values if report.thresholds else None,
        conformal_alpha=alpha,
    )
    record_fit(output, fit)
    card = output / CARD_NAME
    if card.is_file():
        history = fitting_history(output)
        card.write_text(with_section(replace_results(card.read_text(), report), history))
    return report, output, fit
