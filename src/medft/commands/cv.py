"""`medft cv`: patient-grouped k-fold cross-validation, with the fold ensemble on the test split.

The train and validation splits are pooled and cut into folds (`medft.data.folds`);
each fold trains the recipe as given, with that fold held out as its validation
split, into ``OUTPUT/fold-<k>`` (a complete model folder, so ``--model OUTPUT/fold-*``
works for `medft predict` and `medft evaluate`). Folds run one after another in this
process (under `accelerate launch` as a single run would); a fold that finished is
skipped when the command is run again, and one that was cut short resumes from its
last complete checkpoint. Each finished fold's `cv_fold.json` records the number of
folds, its run's settings and the dataset's fingerprint (`medft.training.run_record`), so
folds of another cross-validation in the folder are refused, before anything is trained,
unless ``--overwrite`` trains them again. Then: the per-fold table and its mean and sd, the pooled
out-of-fold evaluation with bootstrap intervals, and the ensemble of the fold models
(mean probabilities) on the test split, which the folds never saw.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medft.config import DataArguments, EvaluationOptions, MedftTrainingArguments, ModelArguments
from medft.config.commands import CvArguments
from medft.data.loading import read_dataset, task_of
from medft.data.pipeline import dataset_identity, recipe_splits
from medft.errors import MedftError
from medft.evaluation.evaluate import (
    EvaluationReport,
    SplitScores,
    evaluate_scores,
    subgroup_attributes,
)
from medft.evaluation.plots import plot_fold_metrics
from medft.evaluation.reporting import write_evaluation
from medft.evaluation.saved_models import split_scores
from medft.inference.classifier import load_members
from medft.parsing import Recipe, parse_recipe
from medft.public_names import model_name
from medft.training.run import setup_logging, train
from medft.training.run_record import (
    FOLD_RESULT,
    HELD_OUT,
    RunRecord,
    other_run,
    owned_files,
    recipe_settings,
    remove_owned,
    write_atomically,
)

logger = logging.getLogger("medft")
MARKER_KEYS = {"folds", "recipe", "settings", "dataset", "sizes", "metrics"}  # in FOLD_RESULT
FOLDS_NAME = "folds.csv"
SUMMARY_NAME = "cv_summary.json"
FOLDS_PLOT = "fold_metrics.png"


@dataclass
class FoldResult:
    fold: int
    folder: Path
    sizes: dict[str, int]
    metrics: dict[str, float]  # the headline metrics on the held-out fold
    held_out: SplitScores


@dataclass
class CvResult:
    output: Path
    metric: str
    folds: list[FoldResult]
    out_of_fold: EvaluationReport
    ensemble: EvaluationReport | None  # None without a test split

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and sample standard deviation of each headline metric over the folds."""
        names = [
            name for name in self.folds[0].metrics if all(name in f.metrics for f in self.folds)
        ]
        values = {name: np.array([fold.metrics[name] for fold in self.folds]) for name in names}
        return {
            name: {"mean": float(v.mean()), "sd": float(v.std(ddof=1))}
            for name, v in values.items()
        }


def save_held_out(folder: Path, scores: SplitScores) -> None:
    arrays = {"probs": scores.probs, "labels": scores.labels}
    if scores.patients is not None:
        arrays["patients"] = np.asarray(scores.patients, dtype=str)
    np.savez(folder / HELD_OUT, **arrays)


def load_held_out(folder: Path) -> SplitScores:
    with np.load(folder / HELD_OUT, allow_pickle=False) as saved:
        patients = saved["patients"] if "patients" in saved.files else None
        return SplitScores(saved["probs"], saved["labels"], patients)


@dataclass
class Fold:
    """One fold's run: its recipe, its folder, and the record its run keeps there."""

    index: int
    folds: int
    folder: Path
    arguments: tuple[DataArguments, ModelArguments, MedftTrainingArguments]
    record: RunRecord

    @classmethod
    def of(cls, recipe: Recipe, index: int, folds: int, output: Path, identity: dict) -> Fold:
        folder = output / f"fold-{index}"
        data_args = dataclasses.replace(recipe.data, cv_folds=folds, cv_fold=index)
        training_args = dataclasses.replace(recipe.training, output_dir=str(folder))
        arguments = (data_args, recipe.model, training_args)
        return cls(
            index, folds, folder, arguments, RunRecord.of(recipe_settings(*arguments), identity)
        )

    def marker(self, sizes: dict[str, int], metrics: dict[str, float]) -> dict[str, Any]:
        seed = self.arguments[2].seed
        record = self.record
        run = {"recipe": record.recipe, "settings": record.settings, "dataset": record.dataset}
        return {"folds": self.folds, "seed": seed, **run, "sizes": sizes, "metrics": metrics}

    def differences(self, marker: dict[str, Any]) -> list[str]:
        """How the fold recorded in ``marker`` differs from this one (empty: it is this one)."""
        if marker.get("folds") != self.folds:
            return [f"--folds {self.folds} (was {marker.get('folds')})"]
        before = RunRecord(marker["recipe"], marker["settings"], marker["dataset"])
        return self.record.differences(before)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """A finished fold's cv_fold.json; None when it cannot be read (the fold did not finish)
    or was written by an older medft."""
    try:
        marker = json.loads((folder / FOLD_RESULT).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and set(marker) >= MARKER_KEYS else None


def other_folds(output: Path, folds: list[Fold]) -> dict[Path, str]:
    """The fold folders under ``output`` that hold another cross-validation, and how it
    differs: a finished fold of other settings, a fold beyond ``folds``, or a run of another
    recipe. Unreadable markers are folds that did not finish (trained again)."""
    found: dict[Path, str] = {}
    for fold in folds:
        marker = read_marker(fold.folder)
        if marker is not None:
            why = fold.differences(marker)
            why = f"differs in: {', '.join(why)}" if why else None
        else:
            why = other_run(fold.folder, fold.record)
            if why is None and (fold.folder / FOLD_RESULT).exists():
                logger.warning(
                    "%s cannot be read: fold %d did not finish, and is trained again",
                    fold.folder / FOLD_RESULT,
                    fold.index,
                )
        if why:
            found[fold.folder] = why
    planned = {fold.folder for fold in folds}
    for folder in sorted(output.glob("fold-*")):
        if folder not in planned and folder.is_dir() and owned_files(folder):
            was = (read_marker(folder) or {}).get("folds", "more")
            found[folder] = f"differs in: --folds {len(folds)} (was {was})"
    return found


def run_fold(fold: Fold, overwrite: bool) -> FoldResult:
    """Train one fold (or read it back when it finished before)."""
    marker = None if overwrite else read_marker(fold.folder)
    if marker is not None:
        logger.info("Fold %d of %d finished before: %s", fold.index, fold.folds, fold.folder)
        held_out = load_held_out(fold.folder)
        return FoldResult(fold.index, fold.folder, marker["sizes"], marker["metrics"], held_out)
    data_args, model_args, training_args = fold.arguments
    training_args = dataclasses.replace(training_args, overwrite_output_dir=overwrite)
    result = train(data_args, model_args, training_args)
    task = result.task
    held_out = result.validation
    metrics = task.headline_metrics(held_out.probs, held_out.labels, None)
    metrics = {name: float(value) for name, value in metrics.items() if np.isfinite(value)}
    sizes = result.split_sizes
    if training_args.should_save:
        save_held_out(fold.folder, held_out)
        text = json.dumps(fold.marker(sizes, metrics), indent=2) + "\n"
        write_atomically(fold.folder / FOLD_RESULT, text)
    return FoldResult(fold.index, fold.folder, sizes, metrics, held_out)


def pooled(parts: list[SplitScores]) -> SplitScores:
    patients = [part.patients for part in parts]
    return SplitScores(
        np.concatenate([part.probs for part in parts]),
        np.concatenate([part.labels for part in parts]),
        None if any(p is None for p in patients) else np.concatenate(patients),
    )


def ensemble_scores(
    folders: list[Path], dataset, task, batch_size: int, attributes: dict | None = None
) -> SplitScores:
    """Mean probabilities of the fold models on ``dataset`` (unreadable images left out), with
    its images' subgroup ``attributes``."""
    members = load_members(folders)
    scores, _ = split_scores(members, dataset, task, batch_size, 0, attributes=attributes)
    return scores


def write_fold_table(result: CvResult) -> Path:
    names = list(result.summary())
    path = result.output / FOLDS_NAME
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fold", "train_images", "held_out_images", *names])
        for fold in result.folds:
            writer.writerow(
                [
                    fold.fold,
                    fold.sizes["train"],
                    fold.sizes["validation"],
                    *(f"{fold.metrics[name]:.6f}" for name in names),
                ]
            )
    return path


def cross_validate(options: CvArguments) -> CvResult | None:
    """Run every fold of the recipe, then evaluate the folds, pooled, and as an ensemble
    (with performance by the recipe's subgroups, else the dataset's declared ones).
    Folds of another cross-validation in ``output`` are refused before anything is trained;
    ``overwrite`` trains every fold again instead. Under `accelerate launch` every process
    trains the folds and the main one evaluates, writes and returns the result; the others
    return None."""
    recipe = parse_recipe(options.recipe, options.overrides)
    setup_logging(recipe.training)
    output = Path(options.output or recipe.training.output_dir)
    identity = dataset_identity(*recipe_splits(recipe.data))
    plan = [Fold.of(recipe, k, options.folds, output, identity) for k in range(options.folds)]
    others = other_folds(output, plan)
    if others and not options.overwrite:
        folder, why = next(iter(others.items()))
        raise MedftError(
            f"{output} holds the folds of another cross-validation ({folder.name}: {why}); "
            "pass --overwrite to train the folds again, or choose a new --output."
        )
    if recipe.training.should_save:
        for folder in set(others) - {fold.folder for fold in plan}:  # beyond --folds
            remove_owned(folder)
            if not any(folder.iterdir()):
                folder.rmdir()
    results = [run_fold(fold, options.overwrite) for fold in plan]
    if not recipe.training.should_save:
        return None  # the main process evaluates, writes and reports
    dataset = read_dataset(recipe.data.dataset_name, recipe.data.dataset_config)
    task = task_of(
        dataset, recipe.data.train_split, recipe.data.image_column, recipe.data.label_column
    )
    options = EvaluationOptions(
        bootstrap_resamples=recipe.training.bootstrap_resamples,
        threshold_method=recipe.training.threshold_method,
        progress=not recipe.training.disable_tqdm,
    )
    out_of_fold = pooled([fold.held_out for fold in results])
    oof_report = evaluate_scores(task, out_of_fold, split="out-of-fold", options=options)
    output.mkdir(parents=True, exist_ok=True)
    write_evaluation(oof_report, task, out_of_fold, output / "out-of-fold")
    ensemble = None
    test_split = recipe.data.test_split
    if test_split and test_split in dataset:
        folders = [fold.folder for fold in results]
        attributes = subgroup_attributes(
            recipe.training.subgroups,
            recipe.data.dataset_name,
            dataset[test_split],
            test_split,
            "subgroups",
        )
        scores = ensemble_scores(
            folders,
            dataset[test_split],
            task,
            recipe.training.per_device_eval_batch_size,
            attributes,
        )
        ensemble = evaluate_scores(
            task,
            scores,
            split=test_split,
            tuning=out_of_fold,
            tuning_split="out-of-fold",
            options=options,
        )
        ensemble.members = [model_name(folder) for folder in folders]
        write_evaluation(ensemble, task, scores, output / "ensemble")
    result = CvResult(output, task.main_metric, results, oof_report, ensemble)
    write_fold_table(result)
    plot_fold_metrics(
        [f.metrics[result.metric] for f in results], result.metric, output / FOLDS_PLOT
    )
    (output / SUMMARY_NAME).write_text(json.dumps(summary_json(result), indent=2) + "\n")
    return result


def summary_json(result: CvResult) -> dict[str, Any]:
    return {
        "folds": len(result.folds),
        "per_fold": [{"fold": f.fold, **f.sizes, **f.metrics} for f in result.folds],
        "mean_sd": result.summary(),
        "out_of_fold": {name: value for name, value, _ in result.out_of_fold.headline()},
        "ensemble_test": (
            {name: value for name, value, _ in result.ensemble.headline()}
            if result.ensemble
            else None
        ),
    }


def format_cv(result: CvResult) -> str:
    """One screen: the fold table, mean +- sd, pooled out-of-fold with CIs, the ensemble."""
    names = list(result.summary())
    width = max(10, *(len(name) for name in names))
    lines = [
        f"Cross-validation: {len(result.folds)} folds -> {result.output}",
        "",
        "  fold  train  held-out  " + "  ".join(f"{n:>{width}}" for n in names),
    ]
    for fold in result.folds:
        cells = "  ".join(f"{fold.metrics[name]:>{width}.4f}" for name in names)
        lines.append(
            f"  {fold.fold:>4}  {fold.sizes['train']:>5}  {fold.sizes['validation']:>8}  {cells}"
        )
    spread = result.summary()
    lines.append(
        "  mean +- sd       "
        + "  ".join(f"{spread[n]['mean']:.4f}+-{spread[n]['sd']:.4f}".rjust(width) for n in names)
    )
    lines += ["", "Pooled out-of-fold (every image scored by the model that did not train on it):"]
    lines += [
        f"  {name:<20} {value:.4f}  ({interval_text(interval)})"
        for name, value, interval in result.out_of_fold.headline()
    ]
    if result.ensemble is not None:
        lines += [
            "",
            f"Fold ensemble on the {result.ensemble.split} split (mean probabilities; "
            "thresholds tuned out-of-fold):",
        ]
        lines += [
            f"  {name:<20} {value:.4f}  ({interval_text(interval)})"
            for name, value, interval in result.ensemble.headline()
        ]
        thresholds = result.output / "ensemble" / "thresholds.json"
        lines += [
            "",
            "Predict with the ensemble:",
            f"  medft predict --model '{result.output}/fold-*' --thresholds {thresholds} "
            "IMAGES --output predictions.csv",
        ]
    written = [FOLDS_NAME, SUMMARY_NAME, FOLDS_PLOT, "out-of-fold/"]
    written += ["ensemble/"] * (result.ensemble is not None)
    lines += ["", f"Wrote {', '.join(written[:-1])} and {written[-1]} to {result.output}"]
    return "\n".join(lines)


def interval_text(interval: dict | None) -> str:
    return f"95% CI {interval['low']:.4f}-{interval['high']:.4f}" if interval else "no CI"
