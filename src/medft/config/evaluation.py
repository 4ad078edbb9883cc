"""The options of evaluating saved models: how scores are evaluated (`EvaluationOptions`, the
trainer's too), how a saved model scores images (`ScoringOptions`), and the commands that do
both, `medft evaluate` and `medft calibrate`.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from medft.config.fields import column_names, columns_field
from medft.errors import MedftError
from medft.evaluation.bootstrap import DEFAULT_RESAMPLES

DEFAULT_BINS = 15  # equal-width bins of the reliability diagram
THRESHOLD_METHODS = ("auto", "youden", "f1")
DEFAULT_BATCH_SIZE = 32
DEFAULT_EVAL_BATCH_SIZE = 64
DEFAULT_WORKERS = 2


def check_alpha(value: float | None, key: str) -> None:
    """A conformal alpha, the share of prediction sets allowed to miss: in (0, 1), or none."""
    if value is not None and not 0 < value < 1:
        raise MedftError(
            f"{key} must be an alpha in (0, 1), e.g. 0.1 for prediction sets that hold the "
            f"true label 90% of the time; got {value}."
        )


@dataclass(kw_only=True)
class EvaluationOptions:
    """How an evaluation tunes thresholds, bootstraps and bins: the trainer's and the
    command's."""

    threshold_method: str = field(
        default="auto",
        metadata={"help": "youden | f1 | auto (youden for binary, f1 per finding for multi-label)"},
    )
    threshold: float | None = field(
        default=None, metadata={"help": "binary: use this probability threshold, not a tuned one"}
    )
    bootstrap_resamples: int = field(
        default=DEFAULT_RESAMPLES,
        metadata={
            "help": "bootstrap resamples for the 95% intervals (of patients when the data "
            "has patient_id); 0: none"
        },
    )
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    calibration_bins: int = field(
        default=DEFAULT_BINS, metadata={"help": "equal-width bins of the reliability diagram"}
    )
    progress: bool = field(default=False, metadata={"help": "progress bars", "internal": True})

    def __post_init__(self) -> None:
        if self.threshold_method not in THRESHOLD_METHODS:
            raise MedftError(
                f"threshold method must be one of {', '.join(THRESHOLD_METHODS)}, "
                f"got '{self.threshold_method}'."
            )
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise MedftError(f"threshold must be a probability in [0, 1], got {self.threshold}.")
        if self.bootstrap_resamples < 0 or self.calibration_bins < 1:
            raise MedftError("bootstrap resamples must be >= 0 and calibration bins >= 1.")


@dataclass(kw_only=True)
class ScoringOptions:
    """How a saved model scores images."""

    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "images per batch"})
    num_workers: int = field(
        default=DEFAULT_WORKERS, metadata={"help": "image-decoding processes (0: in this one)"}
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0:
            raise MedftError("--batch-size must be at least 1, --num-workers at least 0.")


TTA_CHOICES = ("flip", "hflip", "vflip", "scales")
MODELS_HELP = (
    "a medft train output_dir; repeated (--model A --model B), or a quoted pattern (--model "
    "'cv/fold-*'), the models' probabilities are averaged: an ensemble"
)


def models_field() -> list[Path]:
    return field(metadata={"help": MODELS_HELP, "repeatable": True, "metavar": "MODEL"})


def expand_models(given: list[Path]) -> list[Path]:
    """Model folders, with quoted patterns (``cv/fold-*``) expanded, sorted."""
    found = []
    for path in given:
        if glob.has_magic(str(path)):
            matches = sorted(Path(p) for p in glob.glob(str(path)))
            if not matches:
                raise MedftError(f"--model {path} matches no folder.")
            found += matches
        else:
            found.append(Path(path))
    return found


def tta_field() -> list[str]:
    return field(
        default_factory=list,
        metadata={
            "help": "test-time augmentation: average over views; flip (the flips the "
            "model was trained with), hflip, vflip, scales (zoomed centre crops)",
            "choices": TTA_CHOICES,
        },
    )


def ood_field() -> bool | None:
    return field(
        default=None,
        metadata={
            "help": "out-of-distribution flags: each image's Mahalanobis distance to the "
            "training images' features, flagged above the threshold saved with the model "
            "(ood_statistics.safetensors); default: when the model folder has them; true: "
            "required (one model folder); false: none"
        },
    )


def label_map_field() -> Path | None:
    return field(
        default=None,
        metadata={
            "help": "a YAML file mapping the dataset's label names onto the model's (map: "
            "{glioma: tumor, notumor: normal, ...}; drop: [labels left out]), for another "
            "site's data labelled otherwise",
            "metavar": "MAP_YAML",
        },
    )


@dataclass(kw_only=True)
class ModelAndData:
    model: list[Path] = models_field()
    dataset: str = field(metadata={"help": "a prepared dataset folder"})


@dataclass(kw_only=True)
class EvaluateArguments(EvaluationOptions, ScoringOptions, ModelAndData):
    """medft evaluate: metrics with 95% CIs, tuned thresholds, calibration and plots; on
    another site's data, set against the model's own test split."""

    split: str = field(default="test", metadata={"help": "split to evaluate"})
    tune_split: str = field(
        default="validation",
        metadata={
            "help": "split the thresholds are tuned on; without it, the model folder's "
            "thresholds.json, else 0.5"
        },
    )
    output: Path | None = field(
        default=None,
        metadata={
            "help": "folder for the results (default: the model folder, where medft "
            "predict finds thresholds.json)"
        },
    )
    batch_size: int = field(default=DEFAULT_EVAL_BATCH_SIZE, metadata={"help": "images per batch"})
    tta: list[str] = tta_field()
    subgroups: list[str] | None = columns_field(
        "columns of the split to report performance by, e.g. sex,age_band,view_position: per "
        "group the metrics and the gap to the rest with 95% CIs, and a forest plot; default: "
        "the attributes medft prepare declared for the dataset; none: no subgroups"
    )
    label_map: Path | None = label_map_field()
    ood: bool | None = ood_field()

    def __post_init__(self) -> None:
        EvaluationOptions.__post_init__(self)
        ScoringOptions.__post_init__(self)
        self.subgroups = column_names(self.subgroups, "--subgroups")
        self.model = expand_models(self.model)
        if len(self.model) > 1 and self.output is None:
            raise MedftError("an ensemble (several --model) needs --output for its evaluation.")


@dataclass(kw_only=True)
class CalibrateArguments(EvaluationOptions, ScoringOptions, ModelAndData):
    """medft calibrate: re-fit a saved model's probabilities on a labelled (local) sample,
    folded into its weights, with a prior shift and conformal prediction sets if asked."""

    model: Path = field(metadata={"help": "a medft train output_dir"})
    per_finding: bool = field(
        default=False, metadata={"help": "multi-label: one temperature per finding"}
    )
    output: Path | None = field(
        default=None, metadata={"help": "folder for the calibrated model (default: in place)"}
    )
    split: str = field(
        default="test", metadata={"help": "split the calibrated model is evaluated on"}
    )
    tune_split: str = field(
        default="validation",
        metadata={
            "help": "split the temperature, thresholds, prior shift and conformal sets are "
            "fitted on (a labelled local sample); never the evaluated --split"
        },
    )
    prior_shift: bool = field(
        default=False,
        metadata={
            "help": "fold the local class priors of --tune-split (against the training "
            "prevalence saved with the model) into the classifier's bias"
        },
    )
    label_map: Path | None = label_map_field()
    conformal: float | None = field(
        default=None,
        metadata={
            "help": "alpha: fit conformal prediction sets that hold the true label with "
            "probability 1 - alpha (per class; per finding and state) on --tune-split, saved "
            "as conformal.json; default: the alpha of the model's conformal.json, if any"
        },
    )

    def __post_init__(self) -> None:
        EvaluationOptions.__post_init__(self)
        ScoringOptions.__post_init__(self)
        check_alpha(self.conformal, "--conformal")
        if self.split == self.tune_split:
            raise MedftError(
                f"--split {self.split} is also --tune-split: the sample the model is fitted on "
                "cannot be its test; give another --split (or --tune-split)."
            )
