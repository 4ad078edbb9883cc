"""transformers' own models: a Hub id or local folder (its weights, or random ones), or a model
type (random weights).

The recipe's settings go into the config (config_overrides when it is read, since some
attributes derive from others; drop path; the input size where the position embeddings can
follow); what a transformers config cannot hold is refused. The image processor is the
pretrained model's, else the model type's standard one, sized to the input. The block layout
is the largest `nn.ModuleList` of the backbone (the base model, or SigLIP's vision tower),
which is the encoder's layer or stage list in every vision family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

from medft.config import ModelArguments, is_model_type
from medft.data.transforms import InputSpec
from medft.errors import MedftError
from medft.inference.preprocessing import FLOOR, ON_PIL, ON_TENSOR
from medft.modeling.families.base import (
    BackboneFamily,
    Source,
    hub_settings,
    load_error,
    loaded_config,
)
from medft.modeling.heads import set_transformers_drop_path
from medft.modeling.layout import BlockLayout
from medft.modeling.weights import check_saved_weights

PIL_TO_TORCHVISION = {
    Image.Resampling.NEAREST: InterpolationMode.NEAREST,
    Image.Resampling.BILINEAR: InterpolationMode.BILINEAR,
    Image.Resampling.BICUBIC: InterpolationMode.BICUBIC,
    Image.Resampling.LANCZOS: InterpolationMode.LANCZOS,
    Image.Resampling.BOX: InterpolationMode.BOX,
    Image.Resampling.HAMMING: InterpolationMode.HAMMING,
}
PIL_RESAMPLING = {int(mode): mode.name.lower() for mode in Image.Resampling}
# model types transformers has no image classifier for, and where timm has the same weights
TIMM_PORTS = {
    "dinov3_vit": "timm/vit_base_patch16_dinov3.lvd1689m",
    "dinov3_convnext": "timm/convnext_base.dinov3_lvd1689m",
}


def check_classifiable(config: PretrainedConfig, name: str) -> None:
    """Refuse a model type that transformers has no image classifier for (DINOv3 in
    transformers 5): the saved model could not be loaded by `pipeline()`."""
    auto_map = getattr(config, "auto_map", None) or {}
    if type(config) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING or (
        "AutoModelForImageClassification" in auto_map
    ):
        return
    port = TIMM_PORTS.get(config.model_type)
    hint = f"use its timm port, {port}" if port else "choose a model with one, or a timm model"
    raise MedftError(
        f"transformers has no image classifier for '{name}' (model type {config.model_type}), "
        f"so pipeline() could not load the fine-tuned model; {hint}."
    )


def apply_transformers_settings(config: PretrainedConfig, args: ModelArguments) -> None:
    """Drop path and input size; refuse what a transformers config cannot hold."""
    if args.head_hidden_size:
        raise MedftError(
            f"{args.head_hidden_key}: a {config.model_type} config cannot describe an MLP head, so "
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


def backbone_name(model: PreTrainedModel) -> str:
    """The child module that is the backbone: the base model (`base_model_prefix`), or where
    the model has no child by that name (SigLIP's classifier keeps its `vision_model`), the
    child with the most parameters."""
    if model.base_model_prefix in dict(model.named_children()):
        return model.base_model_prefix
    sizes = {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }
    return max(sizes, key=sizes.__getitem__)


def on_pil(processor: Any) -> bool:
    """A processor of the PIL backend (NumPy on PIL images) rather than torchvision's."""
    return getattr(processor, "backend", "torchvision") == "pil"


class TransformersFamily(BackboneFamily):
    """transformers' own models (`AutoModelForImageClassification`)."""

    def claims(self, name: str) -> bool:
        return is_model_type(name)

    def new_config(self, args: ModelArguments) -> PretrainedConfig:
        """The model type's config, with config_overrides."""
        return AutoConfig.for_model(args.model_name_or_path, **(args.config_overrides or {}))

    def hub_weights(self, name: str) -> str:
        raise MedftError(
            f"model_name_or_path '{name}' is a model type, which has no weights; give a Hub "
            "id or folder, or set pretrained: false to train this architecture from scratch."
        )

    def owns(self, made: Any) -> bool:
        """Any config, model or image processor: the family asked last (`FAMILIES`)."""
        return True

    def configure(self, args: ModelArguments, source: Source) -> PretrainedConfig:
        config = source.config
        name = args.model_name_or_path
        if args.config_overrides and not is_model_type(name):  # some attributes derive from others
            config = loaded_config(source.weights or name, args, **args.config_overrides)
        check_classifiable(config, args.model_name_or_path)
        apply_transformers_settings(config, args)
        return config

    def build(
        self, args: ModelArguments, config: PretrainedConfig, weights: str | None
    ) -> PreTrainedModel:
        if weights is None:
            return AutoModelForImageClassification.from_config(
                config, trust_remote_code=args.trust_remote_code
            )
        check_saved_weights(weights)
        try:
            return AutoModelForImageClassification.from_pretrained(
                weights, config=config, ignore_mismatched_sizes=True, **hub_settings(args)
            )
        except (OSError, ValueError) as error:
            raise load_error(weights, error) from None

    def processor(self, args: ModelArguments, config: PretrainedConfig, weights: str | None) -> Any:
        """The pretrained model's processor, or the standard one of its type, sized to the
        input."""
        if weights is not None:
            try:
                processor = AutoImageProcessor.from_pretrained(weights, **hub_settings(args))
            except (OSError, ValueError) as error:
                raise load_error(weights, error) from None
        else:
            processor = local_processor(args.model_name_or_path) or default_processor(config)
        if args.image_size:
            return resize_processor(processor, args.image_size)
        if weights is None and isinstance(getattr(config, "image_size", None), int):
            return resize_processor(processor, config.image_size)  # the config's, not the default
        return processor

    def input_spec(self, processor: Any) -> InputSpec:
        """The crop (or resize) size, image_mean and image_std, resample; torchvision
        processors fuse the rescale into the normalisation."""
        size = (
            processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
        )
        if size.get("height"):
            height, width = size["height"], size["width"]
        else:
            height = width = size["shortest_edge"]
        resample = Image.Resampling(int(getattr(processor, "resample", Image.Resampling.BICUBIC)))
        return InputSpec(
            size=(height, width),
            mean=tuple(processor.image_mean),
            std=tuple(processor.image_std),
            interpolation=PIL_TO_TORCHVISION[resample],
            rescale_fused=not on_pil(processor),
        )

    def preprocessing_settings(self, processor: Any) -> dict[str, Any]:
        """Resize, crop (ConvNeXt's ``crop_pct`` too), rescale, normalise."""
        size = dict(processor.size) if processor.do_resize else None
        crop = dict(processor.crop_size) if getattr(processor, "do_center_crop", False) else None
        crop_pct = getattr(processor, "crop_pct", None)
        if size and crop_pct and size.get("shortest_edge"):  # ConvNeXt: resize beyond, crop back
            edge = size["shortest_edge"]
            size, crop = (
                ({"shortest_edge": int(edge / crop_pct)}, {"height": edge, "width": edge})
                if edge < 384
                else ({"height": edge, "width": edge}, None)
            )
        if size and set(size) - {"shortest_edge", "height", "width"}:
            raise MedftError(
                f"{type(processor).__name__} resizes by {size}; export supports a "
                "shortest edge or a height and width."
            )
        normalize = processor.do_normalize
        return {
            "resize": {key: int(value) for key, value in size.items() if value} if size else None,
            "interpolation": PIL_RESAMPLING[int(processor.resample)],
            "resize_on": ON_PIL if on_pil(processor) else ON_TENSOR,
            "crop": {key: int(value) for key, value in crop.items()} if crop else None,
            "crop_offset": FLOOR,
            "rescale_factor": float(processor.rescale_factor) if processor.do_rescale else 1.0,
            "mean": [float(v) for v in processor.image_mean] if normalize else [0.0] * 3,
            "std": [float(v) for v in processor.image_std] if normalize else [1.0] * 3,
        }

    def processing_class(self, processor: Any) -> Any:
        return processor  # saved as preprocessor_config.json, which pipeline() reads

    def classifier_name(self, model: PreTrainedModel) -> str:
        """The last child module (the base model aside) that holds a linear layer."""
        children = [name for name, _ in model.named_children() if name != backbone_name(model)]
        linear = [
            n
            for n in children
            if any(isinstance(m, nn.Linear) for m in model.get_submodule(n).modules())
        ]
        return linear[-1]

    def check_explainable(self, model: PreTrainedModel) -> None:
        return None  # windowed attention shows in the tokens Grad-CAM finds, and is refused there

    def block_layout(self, model: PreTrainedModel) -> BlockLayout:
        prefix = backbone_name(model)
        base = model.get_submodule(prefix)
        lists = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
        list_name, blocks = max(
            lists, key=lambda item: sum(p.numel() for p in item[1].parameters())
        )
        block_params = [
            (
                f"{list_name}.{i}",
                [f"{prefix}.{list_name}.{i}.{n}" for n, _ in block.named_parameters()],
            )
            for i, block in enumerate(blocks)
        ]
        in_blocks = {name for _, names in block_params for name in names}
        base_params = [f"{prefix}.{n}" for n, _ in base.named_parameters()]
        first = base_params.index(block_params[0][1][0])
        stem = [n for n in base_params[:first] if n not in in_blocks]
        neck = [n for n in base_params[first:] if n not in in_blocks]
        head = [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".")]
        return BlockLayout(stem, block_params, neck, head, self.classifier_name(model))


TRANSFORMERS = TransformersFamily()
