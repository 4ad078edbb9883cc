"""Fully sharded data parallel (FSDP 2, through accelerate) for medft's models.

`shard_by_blocks` makes each of the model's blocks (its `BlockLayout`: a ViT's encoder
layers, a ResNet's residual blocks, ...) one FSDP unit when the accelerate config asks for
`TRANSFORMER_BASED_WRAP` without naming the classes: a model's own ``_no_split_modules`` is
no good for that (timm's wrapper names its whole backbone; transformers' ViT names its
embeddings too, whose patch projection accelerate then shards a second time and torch's
`fully_shard` stops on). `full_state_dict` gathers the weights of a sharded model whole, for
the saved model that `pipeline()` loads, whatever the checkpoints' `fsdp_state_dict_type`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

from medft.errors import MedftError
from medft.modeling.layout import BlockLayout, module_prefix

logger = logging.getLogger("medft")
CONTAINERS = (nn.Sequential, nn.ModuleList)


def block_modules(model: nn.Module, layout: BlockLayout) -> list[nn.Module]:
    """The modules of the layout's blocks, left out any that holds another block (a last
    group of a backbone's leftover parameters spans the backbone itself)."""
    prefixes = [module_prefix(params) for _, params in layout.blocks]
    innermost = [
        prefix
        for prefix in prefixes
        if prefix and not any(other.startswith(f"{prefix}.") for other in prefixes)
    ]
    return [model.get_submodule(prefix) for prefix in innermost]


def shard_units(model: nn.Module, layout: BlockLayout) -> list[str]:
    """Class names of the modules FSDP shards one by one: the blocks, or the modules inside a
    block that is a plain container (a ResNet stage: its residual blocks)."""
    names: dict[str, None] = {}
    for block in block_modules(model, layout):
        units = list(block.children()) if isinstance(block, CONTAINERS) else [block]
        names.update(dict.fromkeys(type(unit).__name__ for unit in units))
    return list(names)


def fsdp_plugin(trainer):
    """The accelerate FSDP plugin the trainer runs under; None without FSDP."""
    return getattr(trainer.accelerator.state, "fsdp_plugin", None)


def shard_by_blocks(trainer, model: nn.Module, layout: BlockLayout) -> None:
    """Under FSDP with `TRANSFORMER_BASED_WRAP` and no classes named
    (`fsdp_transformer_layer_cls_to_wrap`), each of ``model``'s blocks its own unit; classes
    named that hold the input embeddings refused."""
    plugin = fsdp_plugin(trainer)
    if plugin is None or plugin.auto_wrap_policy is not transformer_auto_wrap_policy:
        return
    if not plugin.transformer_cls_names_to_wrap:
        plugin.transformer_cls_names_to_wrap = shard_units(model, layout)
    named = plugin.transformer_cls_names_to_wrap
    holding = embeddings_holders(model, named)
    if holding:
        blocks = ", ".join(shard_units(model, layout))
        raise MedftError(
            f"fsdp_transformer_layer_cls_to_wrap: {holding[0]} holds the model's input "
            "embeddings, which accelerate shards on their own (torch's fully_shard then stops: "
            f"'Invariant encountered'); name the blocks only ({blocks}) or leave the key out."
        )
    logger.info("FSDP: one unit per %s", ", ".join(named))


def embeddings_holders(model: nn.Module, class_names: list[str]) -> list[str]:
    """Those of ``class_names`` whose modules hold the model's input embeddings."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    if embeddings is None:
        return []
    return [
        type(module).__name__
        for module in model.modules()
        if type(module).__name__ in class_names
        and module is not embeddings
        and any(inner is embeddings for inner in module.modules())
    ]


def full_state_dict(trainer, model: nn.Module | None = None) -> dict[str, torch.Tensor] | None:
    """The whole weights of the trainer's sharded model (or of ``model``, made from it: LoRA
    merged), gathered on the CPU: every process takes part; None when nothing is sharded."""
    if fsdp_plugin(trainer) is None:
        return None
    return trainer.accelerator.get_state_dict(trainer.model if model is None else model)
