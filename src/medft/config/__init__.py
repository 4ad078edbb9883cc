"""Every option medft has, as typed dataclasses whose help text is the documentation.

A recipe is a flat YAML file whose keys are fields of `DataArguments` (`config.data`),
`ModelArguments` (`config.model`) or `MedftTrainingArguments` (`config.training`:
`transformers.TrainingArguments` with medft's defaults); `medft.parsing` reads it,
with command-line overrides. Each `medft` command's options are a dataclass:
`config.prepare` (prepare, synthesize), `config.evaluation` (evaluate, calibrate),
`config.inference` (predict, explain, serve, export) and `config.commands` (the commands
that run a recipe, audit), declared with `config.fields`. Every mistake is a `MedftError`
naming the key.

The names below load their module on first use, so `medft --help` (which needs only
the command options) does not import transformers and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "DataArguments": "data",
    "ModelArguments": "model",
    "MedftTrainingArguments": "training",
    "AUTO": "training",
    "EXPONENTIAL": "training",
    "THRESHOLD_METHODS": "evaluation",
    "EvaluationOptions": "evaluation",
    "EvaluateArguments": "evaluation",
    "PredictArguments": "inference",
    "ExplainArguments": "inference",
    "accelerator_available": "checks",
    "is_model_type": "checks",
}
__all__ = [*EXPORTS, "RECIPE_DATACLASSES"]


def __getattr__(name: str) -> Any:
    if name == "RECIPE_DATACLASSES":
        return tuple(
            __getattr__(n) for n in ("DataArguments", "ModelArguments", "MedftTrainingArguments")
        )
    if name not in EXPORTS:
        raise AttributeError(f"module 'medft.config' has no attribute '{name}'")
    return getattr(importlib.import_module(f"medft.config.{EXPORTS[name]}"), name)
