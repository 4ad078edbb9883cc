"""Changing the weights of a model that FSDP shards, in place: on the shards.

After a forward pass FSDP may keep a unit's gathered weights (the root unit, which holds the
classifier, keeps them); a change made there is lost to the shards, which the next gathering
and the saved model read. `reshard` drops the gathered copies first; `operand_of` makes a
plain tensor fit to combine with a sharded weight (a `DTensor`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Replicate


def reshard(model: nn.Module) -> None:
    """Every FSDP unit of ``model`` back to its shards (nothing without FSDP)."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def operand_of(parameter: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` fit to combine with ``parameter``: where FSDP shards it, the same values on
    every process, over its device mesh."""
    if not isinstance(parameter, DTensor):
        return values
    mesh = parameter.device_mesh
    return DTensor.from_local(values, mesh, [Replicate()] * mesh.ndim, run_check=False)
