"""`ProbeOptions`: the recipe keys of the linear probe on cached features (training_mode and
the probe's own settings), part of `MedftTrainingArguments`; and the model settings a mode
cannot take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medft.errors import MedftError

FINETUNE, LINEAR_PROBE, PROBE_THEN_FINETUNE = "finetune", "linear_probe", "probe_then_finetune"
TRAINING_MODES = (FINETUNE, LINEAR_PROBE, PROBE_THEN_FINETUNE)


@dataclass
class ProbeOptions:
    """How a recipe trains: fine-tuning, a linear probe on cached features, or both in turn."""

    training_mode: str = field(
        default=FINETUNE,
        metadata={
            "help": "finetune | linear_probe | probe_then_finetune. linear_probe: the frozen "
            "backbone embeds the train and validation splits once (the processor's pixels, no "
            "augmentation), the features are cached (feature_cache_dir), and the head alone is "
            "trained on them in seconds with the task's loss and class weighting, keeping its "
            "best validation epoch; the model is then saved and evaluated as any other. "
            "probe_then_finetune: that probe's head starts fine-tuning (LP-FT, Kumar et al. "
            "2022), which then runs as finetune does (with LoRA too)."
        },
    )
    probe_epochs: int | None = field(
        default=None,
        metadata={
            "help": "Epochs of the probe's head over the cached features; default: "
            "num_train_epochs. early_stopping_patience stops it early."
        },
    )
    probe_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "The probe's learning rate (AdamW with the recipe's weight_decay, cosine "
            "decay, batches of per_device_train_batch_size); default: learning_rate."
        },
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the probe's features are cached: safetensors, a file per split, "
            "named by and checked against the model's and the split's fingerprints. Default: "
            "feature_cache/ in a prepared dataset's folder; for a Hub dataset, "
            "medft_feature_cache/ in the datasets cache (HF_DATASETS_CACHE)."
        },
    )

    @property
    def probes(self) -> bool:
        """Whether a linear probe runs (alone, or before fine-tuning)."""
        return self.training_mode != FINETUNE


def check_probe_options(options: ProbeOptions) -> None:
    if options.training_mode not in TRAINING_MODES:
        raise MedftError(
            f"training_mode must be one of {', '.join(TRAINING_MODES)}, "
            f"got '{options.training_mode}'."
        )
    if options.probe_epochs is not None and options.probe_epochs < 1:
        raise MedftError(f"probe_epochs must be at least 1, got {options.probe_epochs}.")
    rate = options.probe_learning_rate
    if rate is not None and rate <= 0:
        raise MedftError(f"probe_learning_rate must be positive, got {rate}.")


def check_training_mode(model_args: Any, args: Any) -> None:
    """Settings that make no sense with the recipe's training_mode, refused before anything is
    built (``model_args``: the recipe's `ModelArguments`; ``args``: its
    `MedftTrainingArguments`)."""
    if args.training_mode == FINETUNE:
        if model_args.probe_hidden:
            raise MedftError(
                "probe_hidden is the linear probe's MLP head; with training_mode: finetune give "
                "head_hidden_sizes, or set training_mode: linear_probe or probe_then_finetune."
            )
        return
    if args.training_mode == PROBE_THEN_FINETUNE:
        if model_args.freeze == "backbone":
            raise MedftError(
                "probe_then_finetune with freeze: backbone would train the probe's head twice "
                "and nothing else; use training_mode: linear_probe, or freeze: partial."
            )
        return
    if model_args.lora_r:
        raise MedftError(
            "linear_probe trains the head alone on frozen features, so LoRA adapts nothing; "
            "remove lora_r, or use training_mode: probe_then_finetune."
        )
    if model_args.freeze == "partial" or model_args.gradual_unfreeze_epochs:
        raise MedftError(
            "linear_probe keeps the whole backbone frozen; remove freeze: partial, "
            "unfreeze_last_n and gradual_unfreeze_epochs, or use probe_then_finetune."
        )
    for key in ("ema_decay", "layer_decay"):
        if getattr(args, key) is not None:
            raise MedftError(
                f"{key} is a fine-tuning technique that the linear probe does not use; remove "
                "it, or use training_mode: probe_then_finetune."
            )
