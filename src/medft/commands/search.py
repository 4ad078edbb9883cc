"""`medft search`: hyper-parameter search over a recipe's `search_space`, with Optuna.

Runs `Trainer.hyperparameter_search` (Optuna backend, median pruning after each
evaluation) in one process. Training keys are set on `TrainingArguments` by the
Trainer; model keys (``lora_r``, ``head_dropout``, ``unfreeze_last_n``, ...) are
applied when each trial builds its model. Writes every trial to ``trials.csv``
and the best one as a ready-to-run recipe.
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
from medft.training.run import setup_logging

logger = logging.getLogger("medft")
KINDS = ("float", "int", "categorical")


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


def search(options: SearchArguments) -> SearchResult:
    parsed = parse_recipe(options.recipe, options.overrides)
    data_args, model_args, training_args = parsed
    space = check_space(training_args.search_space)
    setup_logging(training_args)
    set_seed(training_args.seed)
    output = Path(training_args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    data = load_data(data_args, training_args)
    built = build_model(model_args, data.task)
    set_transforms(data, built.processor, data_args)

    def model_init(trial: optuna.Trial | None):
        # transformers 5 builds the model before it asks the trial for its values, so ask
        # here; Optuna gives a trial the same value each time a name is suggested again.
        params = suggest(trial, space) if trial is not None else {}
        trial_args = dataclasses.replace(model_args, **model_settings(params))
        check_combinations(trial_args.lora_r, params.get("layer_decay", training_args.layer_decay))
        return build_model(trial_args, data.task).model

    trainer = build_trainer(data, data_args, model_args, training_args, built, model_init)
    storage = f"sqlite:///{(output / 'search.db').resolve()}"
    objective_key = f"eval_{data.task.main_metric}"
    trainer.hyperparameter_search(
        direction="maximize",
        backend="optuna",
        hp_space=lambda trial: suggest(trial, space),
        n_trials=options.n_trials,
        compute_objective=lambda metrics: metrics[objective_key],
        study_name=output.name,
        storage=storage,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=training_args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study = optuna.load_study(study_name=output.name, storage=storage)
    rows = write_trials(study, output / "trials.csv")
    best_path = best_recipe(options.recipe, parsed.given, study.best_trial.params, output)
    return SearchResult(
        data.task.main_metric, rows, study.best_trial.params, output / "trials.csv", best_path
    )
