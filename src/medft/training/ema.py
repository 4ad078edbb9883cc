"""`ema_decay`: an exponential moving average of the weights, kept by timm's `ModelEmaV3`.

The average is updated after every optimizer step and saved beside each checkpoint
(`ema.safetensors`, so a resumed run carries it on). At each evaluation the trainer
scores it beside the raw weights; the better of the two by the main metric is what
picks the best epoch, and what the run saves at the end.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.utils import ModelEmaV3
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger("medft")
EMA_NAME = "ema.safetensors"
SELECTED_IS_EMA = "selected_is_ema"  # logged at each evaluation: 1.0 when the average won


def selected_metric(metric: str) -> str:
    """The metric that picks the best epoch when an average is kept: the better of the two."""
    return f"selected_{metric}"


@contextlib.contextmanager
def weights_of(model: torch.nn.Module, source: torch.nn.Module) -> Iterator[None]:
    """``model`` holding ``source``'s weights inside the block, its own again after."""
    own = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict(source.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(own)


class EmaCallback(TrainerCallback):
    """Keeps the average: created on the training device, updated each step, checkpointed."""

    def __init__(self, decay: float, resume_from: str | None = None) -> None:
        self.decay, self.resume_from = decay, resume_from
        self.ema: ModelEmaV3 | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.ema = ModelEmaV3(model, decay=self.decay)
        saved = Path(self.resume_from or "") / EMA_NAME
        if self.resume_from and saved.is_file():
            self.ema.module.load_state_dict(load_file(str(saved)))
            logger.info("EMA of the weights resumed from %s", saved)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model, step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            state_dict = {k: v.contiguous() for k, v in self.ema.module.state_dict().items()}
            save_file(state_dict, str(folder / EMA_NAME))


def chosen_evaluation(log_history: list[dict], step: int | None) -> dict | None:
    """The evaluation logged at ``step`` (the best checkpoint's), else the last one."""
    evaluations = [entry for entry in log_history if f"eval_{SELECTED_IS_EMA}" in entry]
    if step is not None:
        evaluations = [entry for entry in evaluations if entry.get("step") == step]
    return evaluations[-1] if evaluations else None


def keep_better_weights(model: torch.nn.Module, callback: EmaCallback, state) -> bool:
    """Load the average into ``model`` when it won the evaluation that picked the saved epoch
    (from that checkpoint's ema.safetensors; without a best checkpoint, the latest average).
    Returns whether the average is what ``model`` now holds."""
    best = state.best_model_checkpoint
    entry = chosen_evaluation(state.log_history, int(best.rsplit("-", 1)[1]) if best else None)
    if not entry or not entry[f"eval_{SELECTED_IS_EMA}"]:
        return False
    if best:
        model.load_state_dict(load_file(str(Path(best) / EMA_NAME)))
    else:
        model.load_state_dict(callback.ema.module.state_dict())
    return True
