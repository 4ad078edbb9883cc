"""`medft search`: hyper-parameter search over a recipe's `search_space`, with Optuna.

Runs `Trainer.hyperparameter_search` (Optuna backend, median pruning after each
evaluation) in one process. Training keys are set on `TrainingArguments` by the
Trainer; model keys (``lora_r``, ``head_dropout``, ``unfreeze_last_n``, ...) are
applied when each trial builds its model. With ``training_mode: linear_probe`` each
trial is a probe fitted on the cached features instead (seconds a trial; the first
trial embeds the splits, the others read the cache). Writes every trial to
``trials.csv`` and the best one as a ready-to-run recipe.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import optuna
import yaml
from transformers import set_seed

from medft.config import DataArguments, ModelArguments
from medft.config.commands import SearchArguments
from medft.config.probe import LINEAR_PROBE, check_training_mode
from medft.data.pipeline import load_data, set_transforms
from medft.errors import MedftError
from medft.modeling import build_model
from medft.parsing import (
    check_combinations,
    check_value,
    field_types,
    parse_recipe,
)
from medft.training.build import build_trainer
from medft.training.probe import LinearProbe
from medft.training.run import setup_logging

logger = logging.getLogger("medft")
KINDS = ("float", "int", "categorical")
# what a linear probe's trial can change: the head and its training on the cached features
PROBE_KEYS = (
    "learning_rate", "probe_learning_rate", "weight_decay", "num_train_epochs", "probe_epochs",
    "per_device_train_batch_size", "probe_hidden", "head_dropout", "class_weighting",
    "label_smoothing_factor", "early_stopping_patience",
)  # fmt: skip


@dataclasses.dataclass
class SearchResult:
    main_metric: str
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    table_path: Path
    recipe_path: Path


def fields_of(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls)}


def check_space(space: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The search space, checked: known keys, known kinds, bounds or choices present."""
    if not space:
        raise MedftError("the recipe has no search_space; add one (see `medft search --help`).")
    known = field_types()
    for key, spec in space.items():
        if key not in known:
            raise MedftError(f"search_space: unknown key '{key}'.")
        if key in fields_of(DataArguments):
            raise MedftError(f"search_space: '{key}' is a data key; only model and training keys.")
        if not isinstance(spec, dict) or spec.get("type") not in KINDS:
            raise MedftError(f"search_space.{key} needs type: one of {', '.join(KINDS)}.")
        needed = ("choices",) if spec["type"] == "categorical" else ("low", "high")
        missing = [name for name in needed if name not in spec]
        if missing:
            raise MedftError(f"search_space.{key} ({spec['type']}) needs {', '.join(missing)}.")
    return space


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(
                key, spec["low"], spec["high"], log=spec.get("log", False)
            )
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(
                key, spec["low"], spec["high"], log=spec.get("log", False)
            )
        else:
            values[key] = trial.suggest_categorical(key, spec["choices"])
    return values


def model_settings(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key in fields_of(ModelArguments)}


def write_trials(study: optuna.Study, path: Path) -> list[dict[str, Any]]:
    rows = [
        {"trial": t.number, "state": t.state.name.lower(), "objective": t.value, **t.params}
        for t in study.trials
    ]
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def best_recipe(recipe: str | Path, given: dict[str, Any], best: dict[str, Any], output: Path):
    """The recipe as given (file and command line) with the best trial's values, writing to
    its own output_dir."""
    values = given | best
    values.pop("search_space", None)
    values["output_dir"] = str(output / "best")
    for key, value in values.items():
        check_value(key, field_types()[key][0], value)
    path = output / "best_recipe.yaml"
    header = f"# The best trial of `medft search {recipe}`; run it with medft train {path}\n"
    path.write_text(header + yaml.safe_dump(values, sort_keys=False))
    return path


def format_trials(rows: list[dict[str, Any]], main_metric: str) -> str:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    header = [key.replace("objective", main_metric) for key in keys]
    table = [header] + [[cell_text(row.get(key, "")) for key in keys] for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(keys))]
    return "\n".join(
        "  ".join(f"{text:<{width}}" for text, width in zip(line, widths)).rstrip()
        for line in table
    )


def cell_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_training(data, data_args, model_args, training_args, space, study, n_trials) -> None:
    """Trials that fine-tune: `Trainer.hyperparameter_search`, pruned after each evaluation
    (``study``: Optuna's study settings)."""
    built = build_model(model_args, data.task)
    set_transforms(data, built.processor, data_args)
    probes = training_args.probes  # probe_then_finetune: each trial's model starts from a probe

    def model_init(trial: optuna.Trial | None):
        # transformers 5 builds the model before it asks the trial for its values, so ask
        # here; Optuna gives a trial the same value each time a name is suggested again.
        params = suggest(trial, space) if trial is not None else {}
        trial_args = dataclasses.replace(model_args, **model_settings(params))
        check_combinations(trial_args.lora_r, params.get("layer_decay", training_args.layer_decay))
        probe = LinearProbe(data, data_args, trial_args, training_args) if probes else None
        return build_model(trial_args, data.task, start_head=probe and probe.start_head).model

    trainer = build_trainer(data, data_args, model_args, training_args, built, model_init)
    objective_key = f"eval_{data.task.main_metric}"
    trainer.hyperparameter_search(
        direction="maximize",
        backend="optuna",
        hp_space=lambda trial: suggest(trial, space),
        n_trials=n_trials,
        compute_objective=lambda metrics: metrics[objective_key],
        **study,
    )


def search_probe(data, data_args, model_args, training_args, space, study, n_trials) -> None:
    """Trials of the linear probe (training_mode: linear_probe): each fits the probe's head on
    the cached features, which the first trial computes and the others read, so a trial
    takes seconds."""
    others = [key for key in space if key not in PROBE_KEYS]
    if others:
        raise MedftError(
            f"search_space: '{others[0]}' is not a setting of the linear probe, whose trials "
            f"train the head on cached features; it searches {', '.join(PROBE_KEYS)}."
        )

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        model_keys = model_settings(params)
        trial_model = dataclasses.replace(model_args, **model_keys)
        trained = {key: value for key, value in params.items() if key not in model_keys}
        trial_args = dataclasses.replace(training_args, **trained)
        check_training_mode(trial_model, trial_args)
        set_seed(training_args.seed)
        probe = LinearProbe(data, data_args, trial_model, trial_args)
        build_model(trial_model, data.task, start_head=probe.start_head)
        return probe.fit.validation[data.task.main_metric]

    optuna.create_study(direction="maximize", **study).optimize(objective, n_trials=n_trials)


def search(options: SearchArguments) -> SearchResult | None:
    parsed = parse_recipe(options.recipe, options.overrides)
    data_args, model_args, training_args = parsed
    space = check_space(training_args.search_space)
    setup_logging(training_args)
    set_seed(training_args.seed)
    output = Path(training_args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    data = load_data(data_args, training_args)
    storage = f"sqlite:///{(output / 'search.db').resolve()}"
    settings = {
        "study_name": output.name,
        "storage": storage,
        "load_if_exists": True,
        "sampler": optuna.samplers.TPESampler(seed=training_args.seed),
        "pruner": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    }
    run = search_probe if training_args.training_mode == LINEAR_PROBE else search_training
    run(data, data_args, model_args, training_args, space, settings, options.n_trials)
    if not training_args.should_save:
        return None  # under `accelerate launch`, the main process writes and reports
    study = optuna.load_study(study_name=output.name, storage=storage)
    rows = write_trials(study, output / "trials.csv")
    best_path = best_recipe(options.recipe, parsed.given, study.best_trial.params, output)
    return SearchResult(
        data.task.main_metric, rows, study.best_trial.params, output / "trials.csv", best_path
    )
