"""A transformers or timm backbone with a classification head sized to the labels.

Every route to a model goes through its config first: a Hub id or a local folder
(of either family: `AutoConfig` reads timm's own `config.json` too), a
`timm/<architecture>[.<tag>]` name (its Hub weights, a local `pretrained_weights`
file, or random weights), or a transformers model type (random weights). The
recipe's settings are applied to that config per family, the dataset's labels
replace whatever labels the pretrained config had, and only then are the weights
built or loaded. The model comes back as a `PreTrainedModel` whose config carries
`id2label`, `label2id` and `problem_type`, plus the image processor that
preprocesses its input, so a saved model is self-describing and
`pipeline("image-classification")` loads it with no extra code. timm models go
through transformers' TimmWrapper; their preprocessing lives in the config's
`pretrained_cfg` (TimmWrapper's processor cannot be saved on its own).
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
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    TimmWrapperImageProcessor,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from medft.config import ModelArguments, is_model_type
from medft.errors import MedftError, first_line
from medft.modeling.heads import set_transformers_drop_path, timm_head_settings
from medft.modeling.weights import check_saved_weights, load_weights_file
from medft.tasks import TaskInfo

DEFAULT_TIMM_CFG = {  # for architectures that timm ships without pretrained weights
    "input_size": (3, 224, 224),
    "mean": timm.data.IMAGENET_DEFAULT_MEAN,
    "std": timm.data.IMAGENET_DEFAULT_STD,
    "crop_pct": 0.875,
    "interpolation": "bicubic",
}
TIMM_LABEL_FIELDS = ("num_classes", "label_names", "label_descriptions", "label_offset")
# pretrained_cfg fields that name where timm's own weights live; a weights file is not those
WEIGHTS_PROVENANCE = (
    "url", "hf_hub_id", "hf_hub_filename", "file", "state_dict", "tag", "origin_url", "paper_ids",
    "paper_name", "license", "notes", "description",
)  # fmt: skip


def label_settings(task: TaskInfo) -> dict[str, Any]:
    return {
        "num_labels": len(task.label_names),
        "id2label": task.id2label,
        "label2id": task.label2id,
        "problem_type": task.problem_type,
    }


def set_labels(config: PretrainedConfig, task: TaskInfo) -> None:
    """The dataset's labels, replacing any the pretrained config came with.

    TimmWrapper's config saves its labels as `label_names`, and a config read from a
    pretrained folder keeps that folder's `label_names` as an attribute, which then
    wins over `id2label` when saving: it must be replaced too, and timm's own label
    fields (in `pretrained_cfg`, and `num_classes` in `model_args`, as timm's Hub
    exports write them) dropped.
    """
    for key, value in label_settings(task).items():
        setattr(config, key, value)
    if isinstance(config, TimmWrapperConfig):
        config.label_names = list(task.label_names)
        config.__dict__.pop("label_descriptions", None)
        config.pretrained_cfg = {
            key: value for key, value in (config.pretrained_cfg or DEFAULT_TIMM_CFG).items()
            if key not in TIMM_LABEL_FIELDS
        }  # fmt: skip
        if config.model_args:
            config.model_args = {
                key: value for key, value in config.model_args.items() if key != "num_classes"
            } or None


def is_timm_config(config: PretrainedConfig) -> bool:
    return isinstance(config, TimmWrapperConfig)


def base_model_id(args: ModelArguments) -> str | None:
    """The Hub id the weights come from, for the model card; None for random or local weights."""
    if not args.pretrained or args.pretrained_weights:
        return None
    if args.is_timm:
        return timm_architecture(args.model_name_or_path)[2].hf_hub_id
    name = args.model_name_or_path
    return None if Path(name).expanduser().exists() else name


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


def build_backbone(args: ModelArguments, task: TaskInfo) -> tuple[PreTrainedModel, Any]:
    """The model to fine-tune and its image processor."""
    config = recipe_config(args)
    set_labels(config, task)
    if is_timm_config(config):
        return build_timm_model(args, config), timm_processor(config)
    return build_transformers_model(args, config), transformers_processor(args, config)


def build_processor(args: ModelArguments) -> Any:
    """Only the image processor a recipe's model would use (no weights are built or loaded)."""
    config = recipe_config(args)
    if is_timm_config(config):
        return timm_processor(config)
    return transformers_processor(args, config)


# configs ---------------------------------------------------------------------------------------


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


# transformers models --------------------------------------------------------------------------


def build_transformers_model(args: ModelArguments, config: PretrainedConfig) -> PreTrainedModel:
    source = weights_source(args)
    if source is None:
        return AutoModelForImageClassification.from_config(
            config, trust_remote_code=args.trust_remote_code
        )
    check_saved_weights(source)
    try:
        return AutoModelForImageClassification.from_pretrained(
            source, config=config, ignore_mismatched_sizes=True, **hub_settings(args)
        )
    except (OSError, ValueError) as error:
        raise load_error(source, error) from None


def resize_processor(processor: Any, size: int) -> Any:
    """The same processor producing ``size`` x ``size`` inputs (crop ratio kept)."""
    settings: dict[str, Any] = {}
    current = processor.size
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        ratio = processor.crop_size["height"] / (current.get("height") or current["shortest_edge"])
        settings["crop_size"] = {"height": size, "width": size}
        resize_to = round(size / ratio)
    else:
        resize_to = size
    if current.get("height"):
        settings["size"] = {"height": resize_to, "width": resize_to}
    else:
        settings["size"] = {"shortest_edge": resize_to}
    return type(processor).from_dict(processor.to_dict(), **settings)


def default_processor(config: PretrainedConfig) -> Any:
    """The standard image processor of a model type, with its default settings."""
    if type(config) not in IMAGE_PROCESSOR_MAPPING:
        raise MedftError(
            f"model type '{config.model_type}' has no standard image processor; start from a "
            "local model folder that holds a preprocessor_config.json."
        )
    classes = IMAGE_PROCESSOR_MAPPING[type(config)]
    return (classes.get("torchvision") or classes["pil"])()


def local_processor(name: str) -> Any | None:
    """The image processor saved in a local model folder, if any."""
    folder = Path(name).expanduser()
    if not (folder.is_dir() and (folder / "preprocessor_config.json").is_file()):
        return None
    try:
        return AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise load_error(name, error) from None


def transformers_processor(args: ModelArguments, config: PretrainedConfig) -> Any:
    """The pretrained model's processor, or the standard one of its type, sized to the input."""
    source = weights_source(args)
    if source is not None:
        try:
            processor = AutoImageProcessor.from_pretrained(source, **hub_settings(args))
        except (OSError, ValueError) as error:
            raise load_error(source, error) from None
    else:
        processor = local_processor(args.model_name_or_path) or default_processor(config)
    if args.image_size:
        return resize_processor(processor, args.image_size)
    if source is None and isinstance(getattr(config, "image_size", None), int):
        return resize_processor(processor, config.image_size)  # the config's, not the default
    return processor


# timm models ----------------------------------------------------------------------------------


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


def build_timm_model(args: ModelArguments, config: TimmWrapperConfig) -> PreTrainedModel:
    source = weights_source(args)
    if source is not None:
        check_saved_weights(source)
        try:
            return TimmWrapperForImageClassification.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True, revision=args.model_revision
            )
        except (OSError, ValueError) as error:
            raise load_error(source, error) from None
    model = TimmWrapperForImageClassification(config)
    # TimmWrapper re-initialises every layer with transformers' generic init; put back
    # timm's own (e.g. Kaiming convolutions, zeroed last batch-norm of a block).
    fresh = timm.create_model(
        config.architecture, num_classes=config.num_labels, **(config.model_args or {})
    )
    model.timm_model.load_state_dict(fresh.state_dict())
    if args.pretrained_weights:
        load_weights_file(model.timm_model, Path(args.pretrained_weights).expanduser())
    return model


def timm_processor(config: TimmWrapperConfig) -> TimmWrapperImageProcessor:
    """TimmWrapper's processor for the config's pretrained cfg, which the saved config.json
    carries, so `pipeline()` preprocesses as training evaluated."""
    return TimmWrapperImageProcessor(
        pretrained_cfg=config.pretrained_cfg, architecture=config.architecture
    )
