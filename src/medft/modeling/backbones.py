"""A transformers or timm backbone with a classification head sized to the labels.

Both families come back as a `PreTrainedModel` whose config carries `id2label`,
`label2id` and `problem_type`, plus the image processor that preprocesses its
input, so a saved model is self-describing and `pipeline("image-classification")`
loads it with no extra code. timm models go through transformers' TimmWrapper; their
preprocessing lives in the config's `pretrained_cfg` (TimmWrapper's processor
cannot be saved on its own).
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
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from medft.config import ModelArguments
from medft.data.loading import TaskInfo
from medft.errors import MedftError, first_line
from medft.modeling.heads import set_transformers_drop_path, timm_head_settings

DEFAULT_TIMM_CFG = {  # for architectures that timm ships without pretrained weights
    "input_size": (3, 224, 224),
    "mean": timm.data.IMAGENET_DEFAULT_MEAN,
    "std": timm.data.IMAGENET_DEFAULT_STD,
    "crop_pct": 0.875,
    "interpolation": "bicubic",
}


def label_settings(task: TaskInfo) -> dict[str, Any]:
    return {
        "num_labels": len(task.label_names),
        "id2label": task.id2label,
        "label2id": task.label2id,
        "problem_type": task.problem_type,
    }


def base_model_id(args: ModelArguments) -> str | None:
    """The Hub id the weights come from, for the model card; None for random or local weights."""
    if not args.pretrained:
        return None
    if args.is_timm:
        return timm_architecture(args.model_name_or_path)[2].hf_hub_id
    name = args.model_name_or_path
    return None if Path(name).expanduser().exists() else name


def build_backbone(args: ModelArguments, task: TaskInfo) -> tuple[PreTrainedModel, Any]:
    """The model to fine-tune and its image processor."""
    if args.is_timm:
        return build_timm_model(args, task)
    return build_transformers_model(args, task)


# transformers models --------------------------------------------------------------------------


def is_model_type(name: str) -> bool:
    return name in CONFIG_MAPPING and not Path(name).expanduser().exists()


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


def load_error(name: str, error: Exception) -> MedftError:
    return MedftError(
        f"cannot load model '{name}' ({type(error).__name__}: {first_line(error)}). "
        "Check the name, your network and `huggingface-cli login`; "
        "use pretrained: false to build it offline."
    )


def transformers_config(args: ModelArguments, **settings: Any) -> PretrainedConfig:
    """The model's config with the recipe's overrides, drop path and input size applied."""
    name, overrides = args.model_name_or_path, dict(args.config_overrides or {})
    if args.pretrained and is_model_type(name):
        raise MedftError(
            f"model_name_or_path '{name}' is a model type, which has no weights; give a Hub id or "
            "folder, or set pretrained: false to train this architecture from scratch."
        )
    try:
        if is_model_type(name):
            config = AutoConfig.for_model(name, **overrides, **settings)
        else:
            config = AutoConfig.from_pretrained(name, **hub_settings(args), **overrides, **settings)
    except (OSError, ValueError) as error:
        raise load_error(name, error) from None
    set_transformers_drop_path(config, args)
    if args.image_size and hasattr(config, "image_size"):
        if args.pretrained and config.image_size != args.image_size:
            raise MedftError(
                f"image_size {args.image_size} differs from the {config.image_size} that "
                f"'{name}' was pretrained at, and its position embeddings cannot follow; "
                "drop image_size or use pretrained: false."
            )
        config.image_size = args.image_size
    return config


def transformers_processor(args: ModelArguments, config: PretrainedConfig) -> Any:
    """The pretrained model's processor, or the standard one of its type, sized to the input."""
    name = args.model_name_or_path
    if args.pretrained:
        try:
            processor = AutoImageProcessor.from_pretrained(name, **hub_settings(args))
        except (OSError, ValueError) as error:
            raise load_error(name, error) from None
    else:
        processor = local_processor(name) or default_processor(config)
    if args.image_size:
        return resize_processor(processor, args.image_size)
    if not args.pretrained and isinstance(getattr(config, "image_size", None), int):
        return resize_processor(processor, config.image_size)  # the config's, not the default
    return processor


def hub_settings(args: ModelArguments) -> dict[str, Any]:
    return {"revision": args.model_revision, "trust_remote_code": args.trust_remote_code}


def build_transformers_model(args: ModelArguments, task: TaskInfo) -> tuple[PreTrainedModel, Any]:
    config = transformers_config(args, **label_settings(task))
    if args.pretrained:
        try:
            model = AutoModelForImageClassification.from_pretrained(
                args.model_name_or_path, config=config, ignore_mismatched_sizes=True,
                **hub_settings(args),
            )  # fmt: skip
        except (OSError, ValueError) as error:
            raise load_error(args.model_name_or_path, error) from None
    else:
        model = AutoModelForImageClassification.from_config(
            config, trust_remote_code=args.trust_remote_code
        )
    return model, transformers_processor(args, config)


def local_processor(name: str) -> Any | None:
    """The image processor saved in a local model folder, if any."""
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / "preprocessor_config.json").is_file():
        return AutoImageProcessor.from_pretrained(folder)
    return None


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


def build_timm_model(args: ModelArguments, task: TaskInfo) -> tuple[PreTrainedModel, Any]:
    architecture, model_name, pretrained_cfg = timm_architecture(args.model_name_or_path)
    model_args = dict(args.config_overrides or {}) | timm_head_settings(args)
    check_timm_arguments(architecture, model_args)
    if args.pretrained:
        if pretrained_cfg is None or not pretrained_cfg.hf_hub_id:
            raise MedftError(
                f"timm has no pretrained weights for '{model_name}' on the Hub; "
                "choose a tag from timm.list_pretrained() or set pretrained: false."
            )
        if args.image_size and pretrained_cfg.fixed_input_size:
            raise MedftError(
                f"'{model_name}' has a fixed input size; image_size cannot change it "
                "while pretrained: true."
            )
        try:
            model = TimmWrapperForImageClassification.from_pretrained(
                pretrained_cfg.hf_hub_id,
                ignore_mismatched_sizes=True,
                model_args=model_args or None,
                revision=args.model_revision,
                **label_settings(task),
            )
        except (OSError, ValueError) as error:
            raise load_error(pretrained_cfg.hf_hub_id, error) from None
    else:
        cfg = pretrained_cfg.to_dict() if pretrained_cfg else dict(DEFAULT_TIMM_CFG)
        if args.image_size and cfg.get("fixed_input_size"):
            model_args["img_size"] = args.image_size
        config = TimmWrapperConfig(
            architecture=architecture,
            pretrained_cfg=cfg,
            model_args=model_args or None,
            **label_settings(task),
        )
        model = TimmWrapperForImageClassification(config)
        # TimmWrapper re-initialises every layer with transformers' generic init; put
        # back timm's own (e.g. Kaiming convolutions, zeroed last batch-norm of a block).
        fresh = timm.create_model(architecture, num_classes=config.num_labels, **model_args)
        model.timm_model.load_state_dict(fresh.state_dict())
    return model, timm_processor(model.config.pretrained_cfg, architecture, args.image_size)


def timm_processor(pretrained_cfg: dict, architecture: str, image_size: int | None) -> Any:
    """TimmWrapper's processor for a pretrained cfg; ``image_size`` is written into the cfg,
    which the saved config.json carries, so `pipeline()` uses the same size."""
    if image_size:
        pretrained_cfg["input_size"] = (3, image_size, image_size)
    return TimmWrapperImageProcessor(pretrained_cfg=pretrained_cfg, architecture=architecture)


def build_processor(args: ModelArguments) -> Any:
    """Only the image processor a recipe's model would use (no weights are built or loaded)."""
    if not args.is_timm:
        return transformers_processor(args, transformers_config(args))
    architecture, _, pretrained_cfg = timm_architecture(args.model_name_or_path)
    cfg = pretrained_cfg.to_dict() if pretrained_cfg else dict(DEFAULT_TIMM_CFG)
    return timm_processor(cfg, architecture, args.image_size)
