"""`build_model`: backbone, head, freezing and LoRA, ready for the Trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft import PeftModel
from transformers import PreTrainedModel, TimmWrapperImageProcessor

from medft.config import ModelArguments
from medft.modeling.backbones import base_model_id, build_backbone, weights_origin
from medft.modeling.freezing import apply_freezing
from medft.modeling.heads import add_head_dropout
from medft.modeling.layout import BlockLayout, block_layout
from medft.modeling.lora import add_lora
from medft.tasks import TaskInfo


@dataclass
class BuiltModel:
    """A model to fine-tune, the processor that feeds it, and its block layout."""

    model: PreTrainedModel | PeftModel
    processor: Any
    layout: BlockLayout

    @property
    def uses_lora(self) -> bool:
        return isinstance(self.model, PeftModel)

    @property
    def is_timm(self) -> bool:
        """A timm model (through TimmWrapper), whichever route it came by."""
        return isinstance(self.processor, TimmWrapperImageProcessor)


def build_model(args: ModelArguments, task: TaskInfo) -> BuiltModel:
    model, processor = build_backbone(args, task)
    layout = block_layout(model)
    add_head_dropout(model, layout.head_module, args.head_dropout)
    apply_freezing(model, layout, args)
    if args.lora_r:
        model = add_lora(model, layout, args)
    return BuiltModel(model, processor, layout)


__all__ = ["BuiltModel", "base_model_id", "build_model", "weights_origin"]
