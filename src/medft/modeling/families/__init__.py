"""The backbone families, transformers' own models and timm's (through TimmWrapper), and the
one place that tells which family a model is of.

`FAMILIES` lists them, asked in turn. `resolve_source` decides the family once for a recipe,
from where its weights come from (as timm's `_resolve_pretrained_source` resolves a
pretrained source once): a name of a family's own (a `timm/` name, a transformers model
type) is that family's, built here or with the weights the family names for it (timm's Hub
weights for the tag); a Hub id or local folder is of the family that owns the config.json
there (TimmWrapper's config for a timm model, timm's own Hub layout included). `family_of`
tells the family of a config, model or image processor already made. Everything else asks
the family (`BackboneFamily`) rather than testing for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medft.config import ModelArguments
from medft.modeling.families.base import BackboneFamily, Source, loaded_config
from medft.modeling.families.timm import TIMM
from medft.modeling.families.transformers import TRANSFORMERS

# asked in turn; transformers' own last, as it owns whatever no family before it does
FAMILIES: list[BackboneFamily] = [TIMM, TRANSFORMERS]


def family_of(made: Any) -> BackboneFamily:
    """The family of a config, a model or an image processor."""
    return next(family for family in FAMILIES if family.owns(made))


def family_named(name: str) -> BackboneFamily | None:
    """The family whose own name ``name`` is (`timm/...`, a model type); None for a Hub id or
    folder."""
    return next((family for family in FAMILIES if family.claims(name)), None)


def weights_source(args: ModelArguments) -> str | None:
    """The Hub id or folder that pretrained weights are loaded from; None when the model is
    built (random weights, or a timm architecture filled from a pretrained_weights file)."""
    if not args.pretrained or args.pretrained_weights:
        return None
    family = family_named(args.model_name_or_path)
    return family.hub_weights(args.model_name_or_path) if family else args.model_name_or_path


def resolve_source(args: ModelArguments) -> Source:
    """The recipe's model: its family, where its weights come from, and its config as found
    there (or new, for a model built here)."""
    name, weights = args.model_name_or_path, weights_source(args)
    family = family_named(name)
    if family and weights is None:
        return Source(family, None, family.new_config(args))
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
    "FAMILIES",
    "TIMM",
    "TRANSFORMERS",
    "BackboneFamily",
    "Source",
    "base_model_id",
    "family_named",
    "family_of",
    "resolve_source",
    "weights_origin",
    "weights_source",
]
