"""The config of the model a recipe describes, before any weights are built or loaded: where
the pretrained weights come from (a Hub id, a local folder, timm's registry, or none), and
the recipe's settings applied per family (timm's `create_model` arguments and
preprocessing, or a transformers config's drop path and input size), each checked and
refused with a `MedftError` naming the key when the model cannot take it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import PretrainedCfg, get_pretrained_cfg, split_model_name_tag
from transformers import (
    AutoConfig,
    PretrainedConfig,
    TimmWrapperConfig,
)

from medft.config import ModelArguments, is_model_type
from medft.errors import MedftError, first_line
from medft.modeling.heads import set_transformers_drop_path, timm_head_settings

DEFAULT_TIMM_CFG = {  # for architectures that timm ships without pretrained weights
    "input_size": (3, 224, 224),
    "mean": timm.data.IMAGENET_DEFAULT_MEAN,
    "std": timm.data.IMAGENET_DEFAULT_STD,
    "crop_pct": 0.875,
    "interpolation": "bicubic",
}
# pretrained_cfg fields that name where timm's own weights live; a weights file is not those
WEIGHTS_PROVENANCE = (
    "url", "hf_hub_id", "hf_hub_filename", "file", "state_dict", "tag", "origin_url", "paper_ids",
    "paper_name", "license", "notes", "description",
)  # fmt: skip


def is_timm_config(config: PretrainedConfig) -> bool:
    return isinstance(config, TimmWrapperConfig)


def hub_settings(args: ModelArguments) -> dict[str, Any]:
    return {"revision": args.model_revision, "trust_remote_code": args.trust_remote_code}


def load_error(name: str, error: Exception) -> MedftError:
    reason = f"{type(error).__name__}: {first_line(error)}"
    if Path(name).expanduser().is_dir():
        return MedftError(
            f"cannot load the model folder {name} ({reason}): save the model again "
            "(save_pretrained) or download it again."
        )
    return MedftError(
        f"cannot load model '{name}' ({reason}). "
        "Check the name, your network and `hf auth login`; offline, give a local folder "
        "(README: Offline and air-gapped), or use pretrained: false to build it offline."
    )


def weights_source(args: ModelArguments) -> str | None:
    """The Hub id or folder that pretrained weights are loaded from; None when the model is
    built (random weights, or a timm architecture filled from a pretrained_weights file)."""
    if not args.pretrained or args.pretrained_weights:
        return None
    if args.is_timm:
        architecture, model_name, pretrained_cfg = timm_architecture(args.model_name_or_path)
        if pretrained_cfg is None or not pretrained_cfg.hf_hub_id:
            raise MedftError(
                f"timm has no pretrained weights for '{model_name}' on the Hub; choose a tag "
                "from timm.list_pretrained(), give pretrained_weights, or set pretrained: false."
            )
        return pretrained_cfg.hf_hub_id
    if is_model_type(args.model_name_or_path):
        raise MedftError(
            f"model_name_or_path '{args.model_name_or_path}' is a model type, which has no "
            "weights; give a Hub id or folder, or set pretrained: false to train this "
            "architecture from scratch."
        )
    return args.model_name_or_path


def loaded_config(name: str, args: ModelArguments, **settings: Any) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(name, **hub_settings(args), **settings)
    except (OSError, ValueError) as error:
        raise load_error(name, error) from None


def recipe_config(args: ModelArguments) -> PretrainedConfig:
    """The config of the model a recipe describes, with the recipe's settings applied."""
    name, source = args.model_name_or_path, weights_source(args)
    overrides = dict(args.config_overrides or {})
    if args.is_timm and source is None:
        config = new_timm_config(args)
    elif is_model_type(name):
        config = AutoConfig.for_model(name, **overrides)
    else:
        config = loaded_config(source or name, args)
        if not is_timm_config(config) and overrides:  # some attributes derive from others
            config = loaded_config(source or name, args, **overrides)
    if is_timm_config(config):
        apply_timm_settings(config, args, pretrained=args.pretrained)
    else:
        apply_transformers_settings(config, args)
    return config


def new_timm_config(args: ModelArguments) -> TimmWrapperConfig:
    """The config of a timm architecture built here (random weights, or a weights file)."""
    architecture, _, pretrained_cfg = timm_architecture(args.model_name_or_path)
    cfg = pretrained_cfg.to_dict() if pretrained_cfg else dict(DEFAULT_TIMM_CFG)
    if args.pretrained_weights:
        cfg = {key: value for key, value in cfg.items() if key not in WEIGHTS_PROVENANCE}
    return TimmWrapperConfig(architecture=architecture, pretrained_cfg=cfg)


def apply_timm_settings(config: TimmWrapperConfig, args: ModelArguments, pretrained: bool) -> None:
    """`timm.create_model` arguments (config_overrides, head, drop path, fixed input sizes) and
    preprocessing (pretrained_cfg_overlay, image_size), on top of what the config had."""
    model_args = dict(config.model_args or {}) | dict(args.config_overrides or {})
    model_args |= timm_head_settings(args)
    cfg = dict(config.pretrained_cfg or DEFAULT_TIMM_CFG) | dict(args.pretrained_cfg_overlay or {})
    if args.image_size:
        if cfg.get("fixed_input_size"):
            if pretrained:
                raise MedftError(
                    f"timm's {config.architecture} has a fixed input size "
                    f"({cfg['input_size'][-1]} px); image_size cannot change it while "
                    "pretrained: true."
                )
            model_args["img_size"] = args.image_size
        channels = cfg.get("input_size", (3,))[0]
        cfg["input_size"] = (channels, args.image_size, args.image_size)
    check_timm_arguments(config.architecture, model_args)
    config.model_args = model_args or None
    config.pretrained_cfg = cfg


def apply_transformers_settings(config: PretrainedConfig, args: ModelArguments) -> None:
    """Drop path and input size; refuse what a transformers config cannot hold."""
    if args.head_hidden_sizes:
        raise MedftError(
            f"head_hidden_sizes: a {config.model_type} config cannot describe an MLP head, so "
            "pipeline() would reload the model without it; use head_dropout, or a timm backbone "
            "with its own MLP head (e.g. timm/convnext_small)."
        )
    if args.pretrained_cfg_overlay:
        raise MedftError(
            "pretrained_cfg_overlay is timm's preprocessing; a transformers model's is its "
            "preprocessor_config.json (image_mean, image_std, resample)."
        )
    set_transformers_drop_path(config, args)
    if args.image_size and hasattr(config, "image_size"):
        if args.pretrained and config.image_size != args.image_size:
            raise MedftError(
                f"image_size {args.image_size} differs from the {config.image_size} that "
                f"'{args.model_name_or_path}' was pretrained at, and its position embeddings "
                "cannot follow; drop image_size or use pretrained: false."
            )
        config.image_size = args.image_size


# timm's registry ----------------------------------------------------------------------------------


def timm_architecture(name: str) -> tuple[str, str, PretrainedCfg | None]:
    """'timm/resnet50.a1_in1k' -> ('resnet50', 'resnet50.a1_in1k', its pretrained cfg).

    The architecture and tag are checked against timm's registry, offline.
    """
    model_name = name.removeprefix("timm/")
    architecture, tag = split_model_name_tag(model_name)
    if not timm.is_model(architecture):
        guess = difflib.get_close_matches(architecture, timm.list_models(), n=1)
        hint = f" (did you mean 'timm/{guess[0]}'?)" if guess else ""
        raise MedftError(f"'{architecture}' is not a timm architecture{hint}.")
    try:
        return architecture, model_name, get_pretrained_cfg(model_name)
    except RuntimeError:
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{architecture}.*")]
        raise MedftError(
            f"'{tag}' is not a pretrained tag of timm's {architecture}; "
            f"it has {', '.join(tags) or 'none'}."
        ) from None


def check_timm_arguments(architecture: str, model_args: dict[str, Any]) -> None:
    """Refuse settings the architecture's constructor does not take, naming them."""
    if not model_args:
        return
    try:
        with torch.device("meta"):
            timm.create_model(architecture, pretrained=False, **model_args)
    except TypeError as error:
        unknown = [key for key in model_args if f"'{key}'" in str(error)]
        what = unknown[0] if unknown else ", ".join(model_args)
        hint = " (an MLP head: try a ConvNeXt)" if what == "head_hidden_size" else ""
        raise MedftError(
            f"timm's {architecture} does not take '{what}'{hint}; remove it from the recipe."
        ) from None
    except (RuntimeError, NotImplementedError):  # not buildable on "meta": the real build checks
        return
