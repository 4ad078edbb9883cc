"""`ModelArguments`: which backbone a recipe fine-tunes, from which weights, and how it is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from medft.config.checks import (
    check_finite,
    check_pretrained_cfg_overlay,
    check_probability,
    is_model_type,
    mapping_value,
)
from medft.errors import MedftError

FREEZE_MODES = ("none", "backbone", "partial")
# how model_name_or_path names a timm architecture (timm/<architecture>[.<tag>]); which family a
# model is of is decided in medft.modeling.families, this only checks pretrained_weights' name
TIMM_PREFIX = "timm/"


@dataclass
class ModelArguments:
    """Which backbone to fine-tune, and how to build it."""

    model_name_or_path: str = field(
        metadata={
            "help": "A Hub model id (`google/vit-base-patch16-224-in21k`), a local model folder, "
            "a transformers model type with `pretrained: false` (`vit`, `convnext`, ...), or "
            "`timm/<architecture>[.<pretrained tag>]` for any timm model (`timm/resnet50.a1_in1k`)."
        }
    )
    pretrained: bool = field(
        default=True,
        metadata={
            "help": "Start from pretrained weights. false builds the same architecture with random "
            "weights and downloads nothing for timm names, local folders and model types."
        },
    )
    config_overrides: dict | str | None = field(
        default=None,
        metadata={
            "help": "Architecture settings: for transformers models, config attributes "
            "(`{hidden_size: 64, num_hidden_layers: 2}`); for timm models, keyword arguments of "
            "`timm.create_model` (`{drop_rate: 0.1}`). A JSON string on the command line."
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input resolution (square). Default: the model's own. Changing it is allowed "
            "for random weights and for CNNs, not for pretrained transformers."
        },
    )
    pretrained_weights: str | None = field(
        default=None,
        metadata={
            "help": "A local weights file (.safetensors, .pth, .pt, .bin) for a "
            "`timm/<architecture>` model, for machines without the Hub: a state dict in timm's "
            "parameter names, read as timm reads checkpoints (nested `state_dict` / `model` "
            "keys, `module.` prefixes) and without running pickled code. A classifier of "
            "another size is replaced. A file carries no preprocessing: give it with "
            "pretrained_cfg_overlay and image_size."
        },
    )
    pretrained_cfg_overlay: dict | str | None = field(
        default=None,
        metadata={
            "help": "timm preprocessing the weights expect, over the architecture's default "
            "(timm's pretrained_cfg fields): {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], "
            "interpolation: bicubic, crop_pct: 0.875, crop_mode: center}; the input size is "
            "image_size. Written into the saved config.json, so pipeline() preprocesses alike. "
            "timm models only. A JSON string on the command line."
        },
    )
    # freezing ---------------------------------------------------------------------------------
    freeze: str = field(
        default="none",
        metadata={
            "help": "What stays fixed: none | backbone (only the head trains) | partial (the "
            "head and the top `unfreeze_last_n` backbone blocks train)."
        },
    )
    unfreeze_last_n: int = field(
        default=0,
        metadata={
            "help": "With freeze: partial, how many of the backbone's own blocks (ViT encoder "
            "layers; ResNet / ConvNeXt stages; EfficientNet blocks) train, counted from the top."
        },
    )
    gradual_unfreeze_epochs: int = field(
        default=0,
        metadata={"help": "Every this many epochs, unfreeze one more block, top down (0: never)."},
    )
    # head -------------------------------------------------------------------------------------
    head_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the features entering the classifier."}
    )
    head_hidden_sizes: list[int] | None = field(
        default=None,
        metadata={
            "help": "An MLP head's hidden layer, e.g. [512]. Only timm architectures that build "
            "one themselves (`head_hidden_size`: ConvNeXt, ...) can save and reload it with plain "
            "pipeline(); anything else is refused rather than saved broken."
        },
    )
    probe_hidden: int | None = field(
        default=None,
        metadata={
            "help": "training_mode linear_probe or probe_then_finetune: the probe's head is a "
            "small MLP, one hidden layer of this size, instead of the classifier layer alone. It "
            "is the architecture's own MLP head (head_hidden_sizes: [N]), so the saved model "
            "reloads with plain pipeline(): timm architectures that build one (ConvNeXt, ...). "
            "One number, so that medft search can search it."
        },
    )
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Stochastic depth rate, for backbones that have it."}
    )
    # LoRA -------------------------------------------------------------------------------------
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains the weights themselves."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout inside LoRA layers."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names LoRA adapts; default per family (the query and value "
            "projections of transformers ViT-like models, qkv for timm ViTs, convolutions and "
            "linear layers for CNNs)."
        },
    )
    save_adapter_only: bool = field(
        default=False,
        metadata={
            "help": "Save (and push) only the LoRA adapter, loadable with peft, instead of the "
            "merged model that plain pipeline() loads."
        },
    )
    model_revision: str = field(default="main", metadata={"help": "Hub revision to load."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the Hub (off: it runs as you)."}
    )

    def __post_init__(self) -> None:
        check_finite(self)
        self.config_overrides = mapping_value("config_overrides", self.config_overrides)
        self.pretrained_cfg_overlay = mapping_value(
            "pretrained_cfg_overlay", self.pretrained_cfg_overlay
        )
        check_pretrained_cfg_overlay(self.pretrained_cfg_overlay)
        if self.pretrained_weights is not None:
            check_pretrained_weights(self)
        if self.pretrained_cfg_overlay and is_model_type(self.model_name_or_path):
            raise MedftError(
                "pretrained_cfg_overlay is timm's preprocessing; a transformers model's is its "
                "preprocessor_config.json (image_mean, image_std, resample)."
            )
        if self.image_size is not None and self.image_size < 8:
            raise MedftError(f"image_size must be at least 8, got {self.image_size}.")
        if self.freeze not in FREEZE_MODES:
            raise MedftError(
                f"freeze must be one of {', '.join(FREEZE_MODES)}, got '{self.freeze}'."
            )
        if self.freeze == "partial" and self.unfreeze_last_n < 1:
            raise MedftError("freeze: partial needs unfreeze_last_n (how many top blocks train).")
        if self.unfreeze_last_n and self.freeze != "partial":
            raise MedftError("unfreeze_last_n only applies with freeze: partial.")
        if self.gradual_unfreeze_epochs and self.freeze == "none":
            raise MedftError("gradual_unfreeze_epochs needs freeze: backbone or partial.")
        if self.lora_r < 0 or (self.lora_r and self.freeze != "none"):
            raise MedftError(
                "lora_r > 0 already keeps the backbone frozen; leave freeze at none with LoRA."
            )
        if self.save_adapter_only and not self.lora_r:
            raise MedftError("save_adapter_only needs LoRA (lora_r > 0).")
        check_probability("head_dropout", "lora_dropout", values=self)
        if self.probe_hidden is not None:
            if self.probe_hidden < 1:
                raise MedftError(f"probe_hidden must be at least 1, got {self.probe_hidden}.")
            if self.head_hidden_sizes is not None:
                raise MedftError(
                    "probe_hidden and head_hidden_sizes both set the MLP head's hidden layer; "
                    "keep one."
                )
        if self.head_hidden_size is not None and is_model_type(self.model_name_or_path):
            raise MedftError(
                f"{self.head_hidden_key}: a transformers model's config cannot describe an MLP "
                "head, so pipeline() would reload the model without it; use head_dropout, or a "
                "timm backbone with its own MLP head (e.g. timm/convnext_small)."
            )
        if self.head_hidden_sizes is not None and len(self.head_hidden_sizes) != 1:
            raise MedftError(
                f"head_hidden_sizes {self.head_hidden_sizes}: only one hidden layer can be "
                "saved so that plain pipeline() reloads it (timm's head_hidden_size)."
            )

    @property
    def head_hidden_size(self) -> int | None:
        """The MLP head's hidden layer: head_hidden_sizes', or the probe's; None: no MLP."""
        return self.probe_hidden or (self.head_hidden_sizes or [None])[0]

    @property
    def head_hidden_key(self) -> str:
        """The recipe key that asked for the MLP head, for messages."""
        return "probe_hidden" if self.probe_hidden else "head_hidden_sizes"


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def check_pretrained_weights(args: ModelArguments) -> None:
    if not args.model_name_or_path.startswith(TIMM_PREFIX):
        raise MedftError(
            "pretrained_weights is for timm/<architecture> names; for a model folder (either "
            "family) set model_name_or_path to the folder instead."
        )
    if not args.pretrained:
        raise MedftError("pretrained_weights with pretrained: false: keep one of the two.")
    if not args.pretrained_weights.lower().endswith(WEIGHT_SUFFIXES):
        raise MedftError(
            f"pretrained_weights {args.pretrained_weights}: expected a state dict file "
            f"({', '.join(WEIGHT_SUFFIXES)})."
        )
