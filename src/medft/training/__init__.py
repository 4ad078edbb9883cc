"""Fine-tuning: the run (`run`: data, model, train, evaluate, save, card, push), the Trainer
it builds (`build`, `trainer`: optimizer groups in `optim`, `losses`, an `ema` of the
weights, the `running_scores` of the train curve) and what a run owns in its output_dir
(`run_record`).

`train`, the run, is importable from here; it loads on first use, so that importing one
module of this package does not import the whole run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from medft.training.run import train

        return train
    raise AttributeError(f"module 'medft.training' has no attribute {name!r}")
