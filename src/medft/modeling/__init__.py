"""`build_model`: backbone, head, freezing and LoRA, ready for the Trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel

from medft.config import ModelArguments
from medft.modeling.backbones import backbone_from
from medft.modeling.families import BackboneFamily, base_model_id, resolve_source, weights_origin
from medft.modeling.freezing import apply_freezing
from medft.modeling.heads import add_head_dropout
from medft.modeling.layout import BlockLayout
from medft.modeling.lora import add_lora
from medft.tasks import TaskInfo


@dataclass
class BuiltModel:
    """A model to fine-tune, the processor that feeds it, its block layout and its family."""

    model: PreTrainedModel | PeftModel
    processor: Any
    layout: BlockLayout
    family: BackboneFamily

    @property
    def uses_lora(self) -> bool:
        return isinstance(self.model, PeftModel)


def build_model(
    args: ModelArguments,
    task: TaskInfo,
    start_head: Callable[[PreTrainedModel, Any], None] | None = None,
) -> BuiltModel:
    """The recipe's model; ``start_head(model, processor)``, when given, sets the head's
    starting weights (the linear probe's) before head dropout, freezing and LoRA."""
    source = resolve_source(args)
    model, processor = backbone_from(source, args, task)
    if start_head is not None:
        start_head(model, processor)
    layout = source.family.block_layout(model)
    add_head_dropout(model, layout.head_module, args.head_dropout)
    apply_freezing(model, layout, args)
    if args.lora_r:
        model = add_lora(model, layout, args)
    return BuiltModel(model, processor, layout, source.family)


__all__ = ["BuiltModel", "base_model_id", "build_model", "weights_origin"]
