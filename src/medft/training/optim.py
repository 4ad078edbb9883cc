"""Optimizer parameter groups (layer-wise learning-rate decay) and the exponential schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from medft.modeling.layout import BlockLayout


def depth_scales(layout: BlockLayout, layer_decay: float) -> dict[str, float]:
    """Learning-rate multiplier per layout group: head 1, last block d, ..., stem d^(n+1).

    The neck (final norms) shares its scale with the last block, as in timm.
    """
    n = len(layout.blocks)
    scales = {"head": 1.0, "neck": layer_decay, "stem": layer_decay ** (n + 1)}
    for index, (name, _) in enumerate(layout.blocks, start=1):
        scales[name] = layer_decay ** (n + 1 - index)
    return scales


def parameter_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    layout: BlockLayout,
    learning_rate: float,
    weight_decay: float,
    decayed: set[str],
    layer_decay: float = 1.0,
) -> list[dict]:
    """Optimizer groups for every parameter, trainable now or later (gradual unfreezing).

    A frozen parameter gets no gradient, and the optimizer skips it until it has one.
    """
    scales = depth_scales(layout, layer_decay)
    groups: dict[tuple[str, bool], dict] = {}
    for name, parameter in named_parameters:
        group = layout.names[name]
        with_decay = name in decayed
        entry = groups.setdefault(
            (group, with_decay),
            {
                "params": [],
                "lr": learning_rate * scales[group],
                "weight_decay": weight_decay if with_decay else 0.0,
            },
        )
        entry["params"].append(parameter)
    return list(groups.values())


def exponential_decay(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    decay_rate: float,
    decay_steps: int,
    staircase: bool = False,
) -> LambdaLR:
    """Linear warmup to the base rate, then rate * decay_rate^(steps after warmup / decay_steps).

    The schedule of the original study (Keras `ExponentialDecay`), with warmup.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        exponent = (step - warmup_steps) / decay_steps
        return decay_rate ** (math.floor(exponent) if staircase else exponent)

    return LambdaLR(optimizer, factor)
