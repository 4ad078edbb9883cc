"""A transformers or timm backbone with a classification head sized to the labels.

Every route to a model goes through its config first (`medft.modeling.model_config`):
a Hub id or a local folder (of either family: `AutoConfig` reads timm's own
`config.json` too), a `timm/<architecture>[.<tag>]` name (its Hub weights, a local
`pretrained_weights` file, or random weights), or a transformers model type (random
weights). The
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

from pathlib import Path
from typing import Any

import timm
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    TimmWrapperImageProcessor,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.modeling.model_config import (
    DEFAULT_TIMM_CFG,
    hub_settings,
    is_timm_config,
    load_error,
    recipe_config,
    timm_architecture,
    weights_source,
)
from medft.modeling.weights import check_saved_weights, load_weights_file
from medft.tasks import TaskInfo

TIMM_LABEL_FIELDS = ("num_classes", "label_names", "label_descriptions", "label_offset")


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
