"""A recipe's backbone with a classification head sized to the dataset's labels.

Every route to a model goes through its config first: the source is resolved once
(`medft.modeling.families.resolve_source`: a Hub id, a local folder of either family, a
`timm/<architecture>[.<tag>]` name with its Hub weights, a `pretrained_weights` file or
random weights, or a transformers model type), its family applies the recipe's settings,
the dataset's labels replace whatever labels the pretrained config had, and only then are
the weights built or loaded. The model comes back as a `PreTrainedModel` whose config
carries `id2label`, `label2id` and `problem_type`, plus the image processor that
preprocesses its input, so a saved model is self-describing and
`pipeline("image-classification")` loads it with no extra code.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from medft.config import ModelArguments
from medft.modeling.families import Source, resolve_source
from medft.tasks import TaskInfo


def build_backbone(args: ModelArguments, task: TaskInfo) -> tuple[PreTrainedModel, Any]:
    """The model to fine-tune and its image processor."""
    return backbone_from(resolve_source(args), args, task)


def backbone_from(
    source: Source, args: ModelArguments, task: TaskInfo
) -> tuple[PreTrainedModel, Any]:
    family = source.family
    config = family.configure(args, source)
    family.set_labels(config, task)
    model = family.build(args, config, source.weights)
    return model, family.processor(args, config, source.weights)


def build_processor(args: ModelArguments) -> Any:
    """Only the image processor a recipe's model would use (no weights are built or loaded)."""
    source = resolve_source(args)
    return source.family.processor(args, source.family.configure(args, source), source.weights)
