"""`DataArguments`: which dataset a recipe trains on, and how its training images are augmented."""

from __future__ import annotations

from dataclasses import dataclass, field

from medft.config.checks import check_finite, check_probability, check_range
from medft.errors import MedftError
from medft.formats.dicom_settings import parse_window

AUTO_AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment")
DATA_CACHES = ("auto", "device", "ram", "none")


@dataclass
class DataArguments:
    """Which dataset to train on, and how to read it."""

    dataset_name: str = field(
        metadata={
            "help": "A folder written by `medft prepare`, or a Hugging Face Hub dataset id. "
            "Its `train` and `validation` splits are used for training; `test`, if present, "
            "for the final evaluation. Streamed (read as it trains, never stored whole): a Hub "
            "id with `streaming: true`, or Parquet / WebDataset shards: a folder of them by "
            "split (local, hf://, s3://...), or a pattern with {split} in it."
        }
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the Hub dataset dataset_name names instead of downloading it (shard "
            "folders and patterns always stream). Needs max_steps; the validation and test "
            "splits are read once into memory, as stored (max_eval_samples: their first N)."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={
            "help": "A streamed training split: the shard order is shuffled each pass, and the "
            "images through a buffer of this many, held as stored (encoded) in each loader "
            "worker of each process: memory ~ buffer x workers x stored image size "
            "(1000 x 8 workers x 60 kB = 480 MB per process at 256 px PNG). 1 turns it off."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of a Hub dataset."}
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the labels; default `label` (single-label, a ClassLabel) or "
            "`labels` (multi-label, a list of ClassLabel), whichever the dataset has."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split to pick the best epoch on."}
    )
    test_split: str = field(
        default="test", metadata={"help": "Split for the final evaluation ('' to skip)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training images (for quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only this many validation and test images."}
    )
    cv_folds: int | None = field(
        default=None,
        metadata={
            "help": "Cross-validation (what `medft cv` sets): train and validation are pooled and "
            "cut into this many folds, stratified by class and grouped by patient; the test "
            "split is left alone."
        },
    )
    cv_fold: int | None = field(
        default=None,
        metadata={"help": "With cv_folds, the fold held out as the validation split (0-based)."},
    )
    dicom_window: str | None = field(
        default=None,
        metadata={
            "help": "A dataset of `medft prepare dicom --bit-depth 16`: the window applied before "
            "the model sees an image, 'CENTER,WIDTH' or a preset (lung, mediastinum, abdomen, "
            "liver, bone, brain), instead of the one it was prepared with. Saved with the model "
            "(dicom.json), so predict applies it too."
        },
    )
    data_cache: str = field(
        default="auto",
        metadata={
            "help": "Where the training images are decoded. none: loader workers decode and "
            "augment every image every epoch. device: decoded once, at their stored size, into "
            "the training device's memory (on a CPU, RAM) and augmented there a batch at a "
            "time, without workers. ram: decoded once into RAM, augmented on the training "
            "device. auto: device when the split takes at most a quarter of the device's free "
            "memory, else ram when it takes at most a quarter of the available RAM, else none. "
            "auto_augment needs the workers (auto then uses none)."
        },
    )

    # augmentation (training images only) -----------------------------------------------------
    crop_scale: list[float] = field(
        default_factory=lambda: [0.8, 1.0],
        metadata={"help": "RandomResizedCrop area range; [1.0, 1.0] turns cropping off."},
    )
    crop_ratio: list[float] = field(
        default_factory=lambda: [0.75, 1.3333],
        metadata={"help": "RandomResizedCrop aspect-ratio range."},
    )
    horizontal_flip: float = field(
        default=0.0,
        metadata={"help": "Probability of a left-right flip (keep 0 for chest X-rays: anatomy)."},
    )
    vertical_flip: float = field(default=0.0, metadata={"help": "Probability of an up-down flip."})
    rotation_degrees: float = field(
        default=0.0, metadata={"help": "Random rotation within +/- this many degrees."}
    )
    zoom: float = field(
        default=0.0,
        metadata={"help": "Random zoom in or out by up to this fraction (Keras RandomZoom)."},
    )
    brightness: float = field(default=0.0, metadata={"help": "Brightness jitter strength."})
    contrast: float = field(default=0.0, metadata={"help": "Contrast jitter strength."})
    auto_augment: str = field(
        default="none",
        metadata={"help": "Learned policy on top: none | randaugment | trivialaugment."},
    )
    randaugment_magnitude: int = field(default=9, metadata={"help": "RandAugment magnitude."})
    random_erasing: float = field(
        default=0.0, metadata={"help": "Probability of erasing a random rectangle."}
    )
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "MixUp Beta(alpha, alpha); 0 turns it off."}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix Beta(alpha, alpha); 0 turns it off."}
    )
    mix_probability: float = field(
        default=1.0, metadata={"help": "Share of batches mixed when mixup or cutmix is on."}
    )

    def __post_init__(self) -> None:
        check_finite(self)
        check_probability(
            "horizontal_flip", "vertical_flip", "random_erasing", "mix_probability", values=self
        )
        check_range("crop_scale", self.crop_scale, low=0.0, high=1.0)
        check_range("crop_ratio", self.crop_ratio, low=0.0, high=None)
        if self.auto_augment not in AUTO_AUGMENT_POLICIES:
            raise MedftError(
                f"auto_augment must be one of {', '.join(AUTO_AUGMENT_POLICIES)}, "
                f"got '{self.auto_augment}'."
            )
        if self.data_cache not in DATA_CACHES:
            raise MedftError(
                f"data_cache must be one of {', '.join(DATA_CACHES)}, got '{self.data_cache}'."
            )
        if self.data_cache in ("device", "ram") and self.auto_augment != "none":
            raise MedftError(
                f"data_cache: {self.data_cache} cannot apply auto_augment: "
                f"{self.auto_augment} (it runs in the loader workers); set data_cache: none, or "
                "remove auto_augment."
            )
        for name in (
            "rotation_degrees",
            "zoom",
            "brightness",
            "contrast",
            "mixup_alpha",
            "cutmix_alpha",
        ):
            if getattr(self, name) < 0:
                raise MedftError(f"{name} must not be negative, got {getattr(self, name)}.")
        if self.zoom >= 1:
            raise MedftError(f"zoom must be below 1 (a fraction), got {self.zoom}.")
        if (self.cv_folds is None) != (self.cv_fold is None):
            raise MedftError("cv_folds and cv_fold go together (medft cv sets both).")
        if self.cv_folds is not None and not (
            self.cv_folds >= 2 and 0 <= self.cv_fold < self.cv_folds
        ):
            raise MedftError(
                f"cv_folds must be at least 2 and cv_fold in 0 .. {self.cv_folds - 1}, "
                f"got {self.cv_folds} and {self.cv_fold}."
            )
        parse_window(self.dicom_window, "dicom_window")  # a bad window stops here, named
        if self.shuffle_buffer_size < 1:
            raise MedftError(
                f"shuffle_buffer_size must be at least 1 (1: no buffer), got "
                f"{self.shuffle_buffer_size}."
            )
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MedftError(f"{name} must be at least 1, got {value}.")
