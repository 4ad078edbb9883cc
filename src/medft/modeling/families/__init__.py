"""The backbone families, transformers' own models and timm's (through TimmWrapper), and the
one place that tells which family a model is of.

`resolve_source` decides it once for a recipe, from where its weights come from (as timm's
`_resolve_pretrained_source` resolves a pretrained source once): a `timm/` name is timm's
(timm's Hub weights for the tag, a `pretrained_weights` file, or none); a transformers model
type is transformers' (no weights); a Hub id or local folder is of the family its
config.json names (TimmWrapper's config for a timm model, timm's own Hub layout included).
`family_of` tells the family of a config, model or image processor already made. Everything
else asks the family (`BackboneFamily`) rather than testing for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig

from medft.config import ModelArguments, is_model_type
from medft.errors import MedftError
from medft.modeling.families.base import BackboneFamily, Source, loaded_config
from medft.modeling.families.timm import TIMM, hub_weights, new_timm_config, timm_name
from medft.modeling.families.transformers import TRANSFORMERS


def family_of(made: Any) -> BackboneFamily:
    """The family of a config, a model or an image processor: timm's where it is
    TimmWrapper's, transformers' otherwise."""
    return TIMM if TIMM.owns(made) else TRANSFORMERS


def weights_source(args: ModelArguments) -> str | None:
    """The Hub id or folder that pretrained weights are loaded from; None when the model is
    built (random weights, or a timm architecture filled from a pretrained_weights file)."""
    if not args.pretrained or args.pretrained_weights:
        return None
    if timm_name(args.model_name_or_path):
        return hub_weights(args.model_name_or_path)
    if is_model_type(args.model_name_or_path):
        raise MedftError(
            f"model_name_or_path '{args.model_name_or_path}' is a model type, which has no "
            "weights; give a Hub id or folder, or set pretrained: false to train this "
            "architecture from scratch."
        )
    return args.model_name_or_path


def resolve_source(args: ModelArguments) -> Source:
    """The recipe's model: its family, where its weights come from, and its config as found
    there (or new, for a model built here)."""
    name, weights = args.model_name_or_path, weights_source(args)
    if timm_name(name) and weights is None:
        return Source(TIMM, None, new_timm_config(args))
    if is_model_type(name):
        return Source(
            TRANSFORMERS, None, AutoConfig.for_model(name, **(args.config_overrides or {}))
        )
    config = loaded_config(weights or name, args)
    return Source(family_of(config), weights, config)


def base_model_id(args: ModelArguments) -> str | None:
    """The Hub id the weights come from, for the model card; None for random or local weights."""
    weights = weights_source(args)
    return None if weights is None or Path(weights).expanduser().exists() else weights


def weights_origin(args: ModelArguments) -> str | None:
    """Where the starting weights come from, in words for the model card; None: random."""
    if not args.pretrained:
        return None
    if args.pretrained_weights:
        return f"the weights file `{Path(args.pretrained_weights).name}`"
    hub_id = base_model_id(args)
    if hub_id:
        return f"[`{hub_id}`](https://huggingface.co/{hub_id})"
    return f"the local model folder `{Path(args.model_name_or_path).name}`"


__all__ = [
    "TIMM",
    "TRANSFORMERS",
    "BackboneFamily",
    "Source",
    "base_model_id",
    "family_of",
    "resolve_source",
    "weights_origin",
    "weights_source",
]
