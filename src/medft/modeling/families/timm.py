"""timm models, through transformers' TimmWrapper.

A `timm/<architecture>[.<tag>]` name is checked against timm's registry, offline; its
weights come from timm's Hub id for the tag, a local `pretrained_weights` file, or none
(timm's own initialisation, not TimmWrapper's generic one). The recipe's settings become
`timm.create_model` arguments (config_overrides, head, drop path, fixed input sizes) and
`pretrained_cfg` preprocessing (pretrained_cfg_overlay, image_size), which the saved
config.json carries: TimmWrapper's processor cannot be saved on its own. The block layout is
timm's own grouping (`group_matcher(coarse=True)`, the one timm's layer decay uses).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import PretrainedCfg, get_pretrained_cfg, group_parameters, split_model_name_tag
from torch import nn
from torchvision.transforms import InterpolationMode
from transformers import (
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    TimmWrapperImageProcessor,
)

from medft.config import ModelArguments
from medft.config.model import TIMM_PREFIX
from medft.data.transforms import InputSpec
from medft.errors import MedftError
from medft.inference.preprocessing import HALF_EVEN, ON_PIL
from medft.modeling.families.base import BackboneFamily, Source, load_error
from medft.modeling.heads import timm_head_settings
from medft.modeling.layout import BlockLayout, module_prefix
from medft.modeling.weights import check_saved_weights, load_weights_file
from medft.tasks import TaskInfo

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
TIMM_LABEL_FIELDS = ("num_classes", "label_names", "label_descriptions", "label_offset")
WRAPPED = "timm_model"  # TimmWrapper's attribute (and parameter prefix) for the timm model


def timm_name(name: str) -> bool:
    """A `timm/<architecture>[.<tag>]` model_name_or_path."""
    return name.startswith(TIMM_PREFIX)


# timm's registry ----------------------------------------------------------------------------------


def timm_architecture(name: str) -> tuple[str, str, PretrainedCfg | None]:
    """'timm/resnet50.a1_in1k' -> ('resnet50', 'resnet50.a1_in1k', its pretrained cfg).

    The architecture and tag are checked against timm's registry, offline.
    """
    model_name = name.removeprefix(TIMM_PREFIX)
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


def side_settings(size: int | list[int] | tuple[int, ...]) -> dict[str, int]:
    """An int (or a one-item list) is the shortest edge; two numbers are height and width."""
    if isinstance(size, int) or len(size) == 1:
        return {"shortest_edge": int(size if isinstance(size, int) else size[0])}
    return {"height": int(size[0]), "width": int(size[1])}


class TimmFamily(BackboneFamily):
    """timm models, through TimmWrapper."""

    card_tags = ("timm",)

    def claims(self, name: str) -> bool:
        return timm_name(name)

    def new_config(self, args: ModelArguments) -> TimmWrapperConfig:
        """The architecture's pretrained cfg (without where timm's weights live, when a weights
        file fills it), or timm's defaults for one without."""
        architecture, _, pretrained_cfg = timm_architecture(args.model_name_or_path)
        cfg = pretrained_cfg.to_dict() if pretrained_cfg else dict(DEFAULT_TIMM_CFG)
        if args.pretrained_weights:
            cfg = {key: value for key, value in cfg.items() if key not in WEIGHTS_PROVENANCE}
        return TimmWrapperConfig(architecture=architecture, pretrained_cfg=cfg)

    def hub_weights(self, name: str) -> str:
        """The Hub id timm gives the tag's weights."""
        _, model_name, pretrained_cfg = timm_architecture(name)
        if pretrained_cfg is None or not pretrained_cfg.hf_hub_id:
            raise MedftError(
                f"timm has no pretrained weights for '{model_name}' on the Hub; choose a tag "
                "from timm.list_pretrained(), give pretrained_weights, or set pretrained: false."
            )
        return pretrained_cfg.hf_hub_id

    def owns(self, made: Any) -> bool:
        """A TimmWrapper config, model or image processor."""
        config = getattr(made, "config", made)
        return isinstance(config, TimmWrapperConfig) or isinstance(made, TimmWrapperImageProcessor)

    def configure(self, args: ModelArguments, source: Source) -> TimmWrapperConfig:
        apply_timm_settings(source.config, args, pretrained=args.pretrained)
        return source.config

    def set_labels(self, config: TimmWrapperConfig, task: TaskInfo) -> None:
        """TimmWrapper's config saves its labels as `label_names`, and a config read from a
        pretrained folder keeps that folder's `label_names` as an attribute, which then wins
        over `id2label` when saving: it is replaced too, and timm's own label fields (in
        `pretrained_cfg`, and `num_classes` in `model_args`, as timm's Hub exports write
        them) dropped."""
        super().set_labels(config, task)
        config.label_names = list(task.label_names)
        config.__dict__.pop("label_descriptions", None)
        config.pretrained_cfg = {
            key: value
            for key, value in (config.pretrained_cfg or DEFAULT_TIMM_CFG).items()
            if key not in TIMM_LABEL_FIELDS
        }
        if config.model_args:
            config.model_args = {
                key: value for key, value in config.model_args.items() if key != "num_classes"
            } or None

    def build(
        self, args: ModelArguments, config: TimmWrapperConfig, weights: str | None
    ) -> PreTrainedModel:
        if weights is not None:
            check_saved_weights(weights)
            try:
                return TimmWrapperForImageClassification.from_pretrained(
                    weights,
                    config=config,
                    ignore_mismatched_sizes=True,
                    revision=args.model_revision,
                )
            except (OSError, ValueError) as error:
                raise load_error(weights, error) from None
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

    def processor(
        self, args: ModelArguments, config: TimmWrapperConfig, weights: str | None
    ) -> TimmWrapperImageProcessor:
        """TimmWrapper's processor for the config's pretrained cfg, which the saved config.json
        carries, so `pipeline()` preprocesses as training evaluated."""
        return TimmWrapperImageProcessor(
            pretrained_cfg=config.pretrained_cfg, architecture=config.architecture
        )

    def input_spec(self, processor: TimmWrapperImageProcessor) -> InputSpec:
        """timm's data config; its eval transform is ToTensor then Normalize."""
        config = processor.data_config
        return InputSpec(
            size=tuple(config["input_size"][1:]),
            mean=tuple(config["mean"]),
            std=tuple(config["std"]),
            interpolation=InterpolationMode(config.get("interpolation", "bicubic")),
        )

    def preprocessing_settings(self, processor: TimmWrapperImageProcessor) -> dict[str, Any]:
        """timm's eval transforms: Resize and CenterCrop on the PIL image, ToTensor, Normalize."""
        settings: dict[str, Any] = {"resize": None, "crop": None, "resize_on": ON_PIL}
        settings |= {"crop_offset": HALF_EVEN, "rescale_factor": 1 / 255}
        for step in processor.val_transforms.transforms:
            kind = type(step).__name__
            if kind == "Resize":
                settings["resize"] = side_settings(step.size)
                settings["interpolation"] = InterpolationMode(step.interpolation).value
            elif kind == "CenterCrop":
                settings["crop"] = side_settings(step.size)
            elif kind == "Normalize":
                settings["mean"] = [float(value) for value in step.mean]
                settings["std"] = [float(value) for value in step.std]
            elif kind not in ("ToTensor", "MaybeToTensor"):
                raise MedftError(
                    f"timm's eval transform {kind} cannot be written to preprocessor.json; "
                    "export supports Resize, CenterCrop, ToTensor and Normalize."
                )
        return settings

    def processing_class(self, processor: TimmWrapperImageProcessor) -> None:
        return None  # the preprocessing lives in config.json's pretrained_cfg

    def classifier_name(self, model: PreTrainedModel) -> str:
        classifier = model.timm_model.get_classifier()
        inner = next(n for n, module in model.timm_model.named_modules() if module is classifier)
        return f"{WRAPPED}.{inner}"

    def probe_layers(self, model: PreTrainedModel) -> list[str]:
        """The classifier, after the MLP head's hidden layer (`pre_logits`, which timm builds
        for `head_hidden_size`) where the head has one."""
        classifier = self.classifier_name(model)
        head = classifier.rpartition(".")[0]
        pre_logits = getattr(model.get_submodule(head), "pre_logits", None)
        if isinstance(pre_logits, nn.Module) and any(
            isinstance(module, nn.Linear) for module in pre_logits.modules()
        ):
            return [f"{head}.pre_logits", classifier]
        return [classifier]

    def block_layout(self, model: PreTrainedModel) -> BlockLayout:
        """timm's coarse groups: the first is the stem, the last the neck and head."""
        timm_model = model.timm_model
        groups = list(group_parameters(timm_model, timm_model.group_matcher(coarse=True)).values())
        head_module = self.classifier_name(model)
        prefixed = [[f"{WRAPPED}.{name}" for name in names] for names in groups]
        head = [n for n in prefixed[-1] if n.startswith(head_module + ".")]
        neck = [n for n in prefixed[-1] if n not in head]
        blocks = prefixed[1:-1] if head else prefixed[1:]
        if not head:  # the classifier sat in no group of its own
            neck = []
            head = [n for n, _ in model.named_parameters() if n.startswith(head_module + ".")]
        names = [
            module_prefix([n.removeprefix(f"{WRAPPED}.") for n in block]) or f"group {i}"
            for i, block in enumerate(blocks, start=1)
        ]
        return BlockLayout(prefixed[0], list(zip(names, blocks)), neck, head, head_module)

    def config_licence(self, config: TimmWrapperConfig) -> str | None:
        """The pretrained cfg's `license` (none when a weights file filled the model)."""
        return (config.pretrained_cfg or {}).get("license")

    def check_explainable(self, model: PreTrainedModel) -> None:
        if str(getattr(model.timm_model, "output_fmt", "")) == "NHWC":
            raise MedftError(
                f"{model.config.architecture} keeps its feature maps channels-last (windowed "
                "attention); explain supports CNNs and ViT-like models."
            )


TIMM = TimmFamily()
