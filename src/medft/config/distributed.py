"""How `accelerate launch` runs a recipe (FSDP, DeepSpeed), read from the environment it
sets for each process, and the recipe settings that cannot run so, refused in one line
before any work."""

from __future__ import annotations

import os
from typing import Any

from medft.errors import MedftError


def launched_with(name: str) -> bool:
    """Whether `accelerate launch` asked for ``name`` (FSDP, DEEPSPEED) in this process."""
    return os.environ.get(f"ACCELERATE_USE_{name}", "false").lower() == "true"


def uses_fsdp(training: Any) -> bool:
    """FSDP from the accelerate config, or from the Trainer's own `fsdp` key."""
    return launched_with("FSDP") or bool(training.fsdp)


def fit_to_launch(training: Any) -> None:
    """Refuse what cannot run under the launch: under FSDP, an EMA of the weights (the
    average would copy a sharded model) and channels-last weights (FSDP shards contiguous
    parameters only), which are then off by default."""
    if not uses_fsdp(training):
        return
    if training.ema_decay is not None:
        raise MedftError(
            "ema_decay under FSDP: an average of sharded weights is not supported; remove "
            "ema_decay, or launch with DDP (accelerate_configs/multi_gpu_fp16.yaml)."
        )
    if training.channels_last:
        raise MedftError(
            "channels_last under FSDP: FSDP shards contiguous weights only; remove channels_last."
        )
    training.channels_last = False
