"""The training loss's recipe keys, `LossOptions` (part of `MedftTrainingArguments`): the
task's cross-entropy, or a loss for long-tailed and multi-label data, with its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from medft.errors import MedftError

LOSSES = ("cross_entropy", "focal", "asymmetric")


@dataclass
class LossOptions:
    """Which loss training minimises, and the settings of focal and asymmetric losses."""

    loss: str = field(
        default="cross_entropy",
        metadata={
            "help": "cross_entropy (softmax cross-entropy; multi-label: binary cross-entropy "
            "per finding) | focal (Lin et al. 2017: each image's cross-entropy scaled by "
            "(1 - p_t)^focal_gamma, so easy images of common classes weigh little; softmax "
            "for one label per image, sigmoid per finding for multi-label) | asymmetric "
            "(ASL, Ridnik et al. 2021, multi-label only: positives and negatives focused "
            "apart, easy negatives shifted down by asl_clip). class_weighting and "
            "label_smoothing_factor apply to each."
        },
    )
    focal_gamma: float = field(
        default=2.0,
        metadata={"help": "loss: focal: the focusing exponent gamma; 0 is cross-entropy."},
    )
    focal_alpha: float | None = field(
        default=None,
        metadata={
            "help": "loss: focal on multi-label data: the weight of a finding's positives, "
            "1 - alpha its negatives' (e.g. 0.25, as Lin et al.); null: none. For one label "
            "per image, weigh classes with class_weighting: balanced instead."
        },
    )
    asl_gamma_neg: float = field(
        default=4.0,
        metadata={"help": "loss: asymmetric: the focusing exponent of negatives."},
    )
    asl_gamma_pos: float = field(
        default=0.0,
        metadata={"help": "loss: asymmetric: the focusing exponent of positives."},
    )
    asl_clip: float = field(
        default=0.05,
        metadata={
            "help": "loss: asymmetric: the probability margin m; a negative's probability p "
            "counts as max(p - m, 0), so easy negatives add nothing. 0: no shift."
        },
    )


def check_loss_options(options: LossOptions, class_weighting: str) -> None:
    """Refuse a loss medft does not have, settings out of range, and settings of another loss."""
    if options.loss not in LOSSES:
        raise MedftError(f"loss must be one of {', '.join(LOSSES)}, got '{options.loss}'.")
    for name in ("focal_gamma", "asl_gamma_neg", "asl_gamma_pos"):
        if getattr(options, name) < 0:
            raise MedftError(f"{name} must not be negative, got {getattr(options, name)}.")
    if not 0 <= options.asl_clip < 1:
        raise MedftError(f"asl_clip must be in [0, 1), got {options.asl_clip}.")
    alpha = options.focal_alpha
    if alpha is None:
        return
    if options.loss != "focal":
        raise MedftError(f"focal_alpha is a setting of loss: focal, not of '{options.loss}'.")
    if not 0 <= alpha <= 1:
        raise MedftError(f"focal_alpha must be in [0, 1], got {alpha}.")
    if class_weighting != "none":
        raise MedftError(
            "focal_alpha and class_weighting: balanced both weigh a finding's positives "
            "against its negatives; keep one."
        )
