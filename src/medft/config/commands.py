"""The options of every `medft` command, as dataclasses: the help text and the one default.

`medft.cli` turns each into its command-line options (as `HfArgumentParser` does for
recipes: ``--field_name`` and ``--field-name``; metadata ``positional`` for the
arguments without a flag), so a default and its name live here and nowhere else.
"""

from __future__ import annotations

import argparse
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medft.dicom_settings import BIT_DEPTHS, WINDOW_PRESETS, parse_window
from medft.errors import MedftError
from medft.near_duplicates import DEFAULT_THRESHOLD

DEFAULT_RESAMPLES = 1000  # bootstrap resamples for the 95% intervals
DEFAULT_BINS = 15  # equal-width bins of the reliability diagram
THRESHOLD_METHODS = ("auto", "youden", "f1")
DEFAULT_BATCH_SIZE = 32
DEFAULT_EVAL_BATCH_SIZE = 64
DEFAULT_WORKERS = 2
DEFAULT_TOP_K = 5
DEFAULT_PORT = 7860  # Gradio's, and what Hugging Face Spaces expect
DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_FILES = 16  # files one upload to medft serve may hold
DEFAULT_MAX_QUEUE = 8  # requests medft serve holds waiting for the model


def positional(help: str, **settings) -> dict:
    return {"positional": True, "help": help, **settings}


def comma_separated(values: list[str]) -> list[str]:
    """``['sex,site', 'view']`` -> ``['sex', 'site', 'view']``: each name once, in order."""
    names = (name.strip() for value in values for name in str(value).split(","))
    return list(dict.fromkeys(name for name in names if name))


def column_names(values: list[str] | None, key: str) -> list[str] | None:
    """Column names given comma-separated and / or one by one, in order, each once; None (the
    default) stays None, and 'none' alone is no columns."""
    if values is None:
        return None
    names = comma_separated(values)
    if "none" in names and names != ["none"]:
        raise MedftError(f"{key}: none means no columns; give it alone, got {', '.join(names)}.")
    return [] if names == ["none"] else names


def columns_field(help: str) -> list[str] | None:
    """Dataset columns, comma-separated and / or repeated (--x a,b --x c), read by
    `column_names`."""
    return field(default=None, metadata={"help": help, "action": "extend", "metavar": "COLUMN"})


# evaluation -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class EvaluationOptions:
    """How an evaluation tunes thresholds, bootstraps and bins: the trainer's and the
    command's."""

    threshold_method: str = field(
        default="auto",
        metadata={"help": "youden | f1 | auto (youden for binary, f1 per finding for "
                  "multi-label)"},
    )  # fmt: skip
    threshold: float | None = field(
        default=None, metadata={"help": "binary: use this probability threshold, not a tuned one"}
    )
    bootstrap_resamples: int = field(
        default=DEFAULT_RESAMPLES,
        metadata={"help": "bootstrap resamples for the 95% intervals (of patients when the data "
                  "has patient_id); 0: none"},
    )  # fmt: skip
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
            found.append(path)
    return found


def tta_field() -> list[str]:
    return field(
        default_factory=list,
        metadata={"help": "test-time augmentation: average over views; flip (the flips the "
                  "model was trained with), hflip, vflip, scales (zoomed centre crops)",
                  "choices": TTA_CHOICES},
    )  # fmt: skip


@dataclass(kw_only=True)
class ModelAndData:
    model: list[Path] = models_field()
    dataset: str = field(metadata={"help": "a prepared dataset folder"})


@dataclass(kw_only=True)
class EvaluateArguments(EvaluationOptions, ScoringOptions, ModelAndData):
    """medft evaluate: metrics with 95% CIs, tuned thresholds, calibration and plots."""

    split: str = field(default="test", metadata={"help": "split to evaluate"})
    tune_split: str = field(
        default="validation",
        metadata={"help": "split the thresholds are tuned on; without it, the model folder's "
                  "thresholds.json, else 0.5"},
    )  # fmt: skip
    output: Path | None = field(
        default=None,
        metadata={"help": "folder for the results (default: the model folder, where medft "
                  "predict finds thresholds.json)"},
    )  # fmt: skip
    batch_size: int = field(default=DEFAULT_EVAL_BATCH_SIZE, metadata={"help": "images per batch"})
    tta: list[str] = tta_field()
    subgroups: list[str] | None = columns_field(
        "columns of the split to report performance by, e.g. sex,age_band,view_position: per "
        "group the metrics and the gap to the rest with 95% CIs, and a forest plot; default: "
        "the attributes medft prepare declared for the dataset; none: no subgroups"
    )

    def __post_init__(self) -> None:
        EvaluationOptions.__post_init__(self)
        ScoringOptions.__post_init__(self)
        self.subgroups = column_names(self.subgroups, "--subgroups")
        self.model = expand_models(self.model)
        if len(self.model) > 1 and self.output is None:
            raise MedftError("an ensemble (several --model) needs --output for its evaluation.")


@dataclass(kw_only=True)
class SavedModel:
    model: Path = field(metadata={"help": "a medft train output_dir"})


@dataclass(kw_only=True)
class SavedModels:
    model: list[Path] = models_field()


@dataclass(kw_only=True)
class PredictArguments(ScoringOptions, SavedModels):
    """medft predict: score images with a saved model into a CSV (batched, GPU when present)."""

    model: list[Path] = field(
        metadata={"help": MODELS_HELP + "; or a model.onnx from medft export (run by "
                  "onnxruntime)", "repeatable": True, "metavar": "MODEL"}
    )  # fmt: skip
    inputs: list[str] = field(
        metadata=positional(
            "image files, folders (searched recursively), or prepared datasets (a folder with "
            "dataset_dict.json; --split picks the split)", nargs="+", metavar="INPUT"
        )
    )  # fmt: skip
    output: Path = field(default=Path("predictions.csv"), metadata={"help": "the CSV to write"})
    split: str = field(default="test", metadata={"help": "split of dataset inputs"})
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": "single-label: labels per row"})
    thresholds: Path | None = field(
        default=None,
        metadata={"help": "thresholds.json to apply (default: the model folder's, from medft "
                  "evaluate)"},
    )  # fmt: skip
    precision: Literal["fp32", "bf16", "fp16"] = field(
        default="fp32",
        metadata={"help": "fp32 gives the scores pipeline() gives; bf16 / fp16 are faster where "
                  "the hardware supports them (bf16: recent Xeon, A100/H100; fp16: GPUs)"},
    )  # fmt: skip

    tta: list[str] = tta_field()
    columns: list[str] | None = columns_field(
        "prepared-dataset inputs: their columns to copy into the CSV, e.g. sex,age_band (file "
        "inputs leave them empty); default: the attributes medft prepare declared for the "
        "dataset; none: no columns"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.columns = column_names(self.columns, "--columns")
        self.model = expand_models(self.model)
        if self.top_k < 1:
            raise MedftError("--top-k must be at least 1.")
        models = [given for given in self.inputs if (Path(given) / "config.json").is_file()]
        if models:
            raise MedftError(
                f"{models[0]} is a model folder, not images: give several models as --model A "
                "--model B, or as a quoted pattern: --model 'cv/fold-*'."
            )


@dataclass(kw_only=True)
class ExplainArguments(SavedModel):
    """medft explain: saliency maps (Grad-CAM) of a saved model's predictions, one PNG each."""

    images: list[str] = field(
        metadata=positional("image files or folders", nargs="+", metavar="IMAGE")
    )
    output: Path = field(metadata={"help": "folder for the PNGs"})
    target: str | None = field(
        default=None, metadata={"help": "label to explain (default: the top prediction)"}
    )
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": "scores shown per image"})
    split: str = field(default="test", metadata={"help": "split of dataset inputs"})


# serving and shipping -------------------------------------------------------------------------


@dataclass(kw_only=True)
class ServeArguments:
    """medft serve: a web page (Gradio) that classifies uploaded images with a saved model."""

    model: str = field(
        metadata={"help": "a medft train output_dir, or a Hub model id (downloaded; with "
                  "--write-space, the Hub model the Space serves)"}
    )  # fmt: skip
    port: int = field(default=DEFAULT_PORT, metadata={"help": "local port to serve on"})
    share: bool = field(
        default=False,
        metadata={"help": "also serve through a temporary public gradio.live link (needs "
                  "internet; anyone with the link can upload images)"},
    )  # fmt: skip
    max_upload_mb: float = field(
        default=DEFAULT_MAX_UPLOAD_MB, metadata={"help": "largest file accepted, in MB"}
    )
    max_files: int = field(
        default=DEFAULT_MAX_FILES,
        metadata={"help": "files classified per upload; the page lists any more as not classified"},
    )
    max_queue: int = field(
        default=DEFAULT_MAX_QUEUE,
        metadata={"help": "requests waiting for the model at once; the page turns more away"},
    )
    write_space: Path | None = field(
        default=None,
        metadata={"help": "write app.py, requirements.txt and README.md of a Hugging Face "
                  "Space serving the Hub model --model into this folder, instead of serving",
                  "metavar": "DIR"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise MedftError(f"--port must be between 1 and 65535, got {self.port}.")
        if self.max_upload_mb <= 0:
            raise MedftError(f"--max-upload-mb must be positive, got {self.max_upload_mb}.")
        for name in ("max_files", "max_queue"):
            if getattr(self, name) < 1:
                raise MedftError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}."
                )


@dataclass(kw_only=True)
class ExportArguments(ScoringOptions, SavedModel):
    """medft export: a saved model as ONNX, with its preprocessing (preprocessor.json) beside
    it, checked against PyTorch."""

    format: Literal["onnx"] = field(default="onnx", metadata={"help": "the format to write"})
    output: Path = field(
        default=Path("model.onnx"),
        metadata={"help": "the .onnx file; preprocessor.json is written beside it"},
    )
    quantize: Literal["dynamic"] | None = field(
        default=None,
        metadata={"help": "dynamic: write onnxruntime's int8 dynamic quantization instead of "
                  "fp32 (smaller, often faster on CPUs; --dataset shows what it costs)"},
    )  # fmt: skip
    dataset: str | None = field(
        default=None,
        metadata={"help": "a prepared dataset: check parity on its images, and compare the "
                  "split's headline metrics for PyTorch and the export"},
    )  # fmt: skip
    split: str = field(default="test", metadata={"help": "split of --dataset"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output.suffix != ".onnx":
            raise MedftError(f"--output {self.output} must end in .onnx.")


# recipes --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RecipeCommand:
    """A command that reads a recipe; any --key value after it overrides the recipe."""

    recipe: Path = field(metadata=positional("a recipe YAML (see recipes/)"))


@dataclass(kw_only=True)
class TrainArguments(RecipeCommand):
    """medft train: fine-tune from a recipe in this process (for several processes:
    accelerate launch src/finetune.py RECIPE)."""


@dataclass(kw_only=True)
class ShowAugmentationsArguments(RecipeCommand):
    """medft show-augmentations: a grid of augmented training images, as the model sees them."""

    output: Path = field(default=Path("augmentations.png"), metadata={"help": "the PNG to write"})
    images: int = field(default=5, metadata={"help": "training images, one per row"})
    versions: int = field(default=6, metadata={"help": "augmented draws per image"})


@dataclass(kw_only=True)
class SearchArguments(RecipeCommand):
    """medft search: hyper-parameter search over the recipe's search_space (Optuna)."""

    n_trials: int = field(default=10, metadata={"help": "trials to run"})


@dataclass(kw_only=True)
class CvArguments(RecipeCommand):
    """medft cv: k-fold cross-validation grouped by patient, and the fold ensemble on the test
    split."""

    folds: int = field(default=5, metadata={"help": "folds over train + validation"})
    output: Path | None = field(
        default=None,
        metadata={"help": "folder for fold-0 ... fold-<k-1> and the summaries (default: the "
                  "recipe's output_dir)"},
    )  # fmt: skip
    overwrite: bool = field(
        default=False,
        metadata={"help": "train every fold again, replacing the folds of an earlier "
                  "cross-validation in the folder (their run files; others are kept)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise MedftError(f"--folds must be at least 2, got {self.folds}.")


@dataclass(kw_only=True)
class CalibrateArguments(EvaluationOptions, ScoringOptions, ModelAndData):
    """medft calibrate: fit a temperature on the validation split and fold it into a saved
    model, so its plain pipeline() returns calibrated probabilities."""

    model: Path = field(metadata={"help": "a medft train output_dir"})
    per_finding: bool = field(
        default=False, metadata={"help": "multi-label: one temperature per finding"}
    )
    output: Path | None = field(
        default=None, metadata={"help": "folder for the calibrated model (default: in place)"}
    )
    split: str = field(default="test", metadata={"help": "split the calibrated model is "
                                                          "evaluated on"})  # fmt: skip
    tune_split: str = field(
        default="validation",
        metadata={"help": "split the temperature and thresholds are fitted on"},
    )

    def __post_init__(self) -> None:
        EvaluationOptions.__post_init__(self)
        ScoringOptions.__post_init__(self)


@dataclass(kw_only=True)
class AuditArguments:
    """medft audit: the near-duplicate leakage audit of a prepared dataset (near copies of an
    image across its splits), or of one dataset's training images against another's, without
    rewriting anything."""

    dataset: str = field(metadata=positional("a prepared dataset folder (or Hub dataset id)"))
    against: str | None = field(
        default=None,
        metadata={"help": "another prepared dataset: audit DATASET's train split against its "
                  "splits (a model trained on one and tested on the other)"},
    )  # fmt: skip
    near_duplicates: str = field(
        default=str(DEFAULT_THRESHOLD),
        metadata={"help": "perceptual hashes within this many bits (0-16) are near copies"},
    )
    output: Path = field(
        default=Path("leakage-audit"),
        metadata={"help": "folder for leakage_audit.json and the contact sheet of the largest "
                  "groups"},
    )  # fmt: skip
    num_proc: int = field(
        default=2, metadata={"help": "processes hashing images (datasets medft prepared store "
                             "their hashes)"}
    )  # fmt: skip


@dataclass(kw_only=True)
class DemoArguments:
    """medft demo: generate a brain-layout dataset, prepare it and fine-tune a small model."""

    output: Path = field(default=Path("medft-demo"), metadata={"help": "working folder"})
    per_class: int = field(default=20, metadata={"help": "generated scans per class"})


# prepare --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PrepareArguments:
    """What every `medft prepare` source takes: where to write, splits, image storage."""

    output: Path = field(metadata={"help": "folder to write to"})
    name: str | None = field(
        default=None,
        metadata={"help": "the dataset's name in its report and card, which never hold a path "
                  "(default: the output folder's name); the paths go to OUTPUT.private.json "
                  "beside the output folder"},
    )  # fmt: skip
    val_size: float = field(default=0.15, metadata={"help": "validation fraction"})
    seed: int = field(default=42, metadata={"help": "split seed"})
    image_size: int | None = field(
        default=None,
        metadata={"help": "resize so the shorter side is N (aspect kept, never upscaled); "
                  "default: store the original encoded bytes"},
    )  # fmt: skip
    png_compression: int = field(
        default=0,
        metadata={"help": "zlib level (0-9) for images medft re-encodes (resized, rotated, "
                  "16-bit...); 0 is fastest to write and to decode each epoch, 1-9 are smaller"},
    )  # fmt: skip
    num_proc: int | None = field(
        default=None, metadata={"help": "processes reading images (default: all cores)"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing prepared dataset"}
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "also push to this Hub dataset", "metavar": "REPO_ID"}
    )
    private: bool = field(default=False, metadata={"help": "make the pushed dataset private"})

    near_duplicates: str = field(
        default=str(DEFAULT_THRESHOLD),
        metadata={"help": "keep near copies of an image (resized, re-encoded, cropped a few "
                  "pixels, greyscale) in one split: perceptual hashes within this many bits "
                  "(0-16), or off; the report counts them and draws the largest groups"},
    )  # fmt: skip

    WRITER_KEYS = ("output", "name", "image_size", "png_compression", "num_proc", "overwrite",
                   "near_duplicates")  # fmt: skip
    HUB_KEYS = ("push_to_hub", "private")


def subgroup_columns_field(help: str) -> list[str]:
    return field(
        default_factory=list,
        metadata={"help": f"{help}; comma-separated (a,b) and/or repeated", "action": "extend",
                  "metavar": "COLUMN"},
    )  # fmt: skip


@dataclass(kw_only=True)
class WithTestSize:
    test_size: float = field(default=0.15, metadata={"help": "test fraction"})


@dataclass(kw_only=True)
class BrainTumorArguments(PrepareArguments, WithTestSize):
    """Kaggle Brain Tumor MRI Images 44 Classes."""

    source: Path = field(metadata={"help": "the unzipped download"})
    task: Literal["multiclass", "binary"] = field(
        default="multiclass", metadata={"help": "44 classes, or tumour vs normal"}
    )


@dataclass(kw_only=True)
class ChestXray14Arguments(PrepareArguments):
    """NIH ChestX-ray14 (Kaggle or NIH layout)."""

    source: Path = field(metadata={"help": "folder with images_001 ..."})
    views: Literal["PA", "AP"] | None = field(
        default=None, metadata={"help": "keep only this view position"}
    )
    val_size: float = field(default=0.1, metadata={"help": "validation fraction of the patients"})


@dataclass(kw_only=True)
class FolderArguments(PrepareArguments, WithTestSize):
    """Class-per-subfolder images, optionally in train/ val/ test/."""

    source: Path = field(metadata={"help": "the folder of class folders"})


@dataclass(kw_only=True)
class LabelTableColumns:
    """How a CSV of file paths and labels is read (`medft prepare csv`, and `dicom --csv`)."""

    image_root: Path | None = field(
        default=None, metadata={"help": "paths are relative to this (default: the CSV's folder)"}
    )
    image_column: str = field(default="image", metadata={"help": "column of file paths"})
    label_column: str = field(default="label", metadata={"help": "column of labels"})
    label_separator: str | None = field(
        default=None, metadata={"help": "multi-label: labels split on this, e.g. '|'"}
    )
    negative_label: str | None = field(
        default=None, metadata={"help": "multi-label value meaning none, e.g. 'No Finding'"}
    )
    split_column: str | None = field(default=None, metadata={"help": "column of train/val/test"})


@dataclass(kw_only=True)
class CsvArguments(LabelTableColumns, PrepareArguments, WithTestSize):
    """A CSV of image paths and labels."""

    csv_path: Path = field(metadata={"help": "the CSV", "aliases": ["--csv"]})
    group_column: str | None = field(
        default=None, metadata={"help": "keep each value (e.g. a patient) in one split"}
    )
    metadata_columns: list[str] = field(
        default_factory=list, metadata={"help": "other columns to keep as text"}
    )
    subgroup_columns: list[str] = subgroup_columns_field(
        "columns of attributes to compare a model's results by (sex, age band, site...), kept "
        "as text and named in the report"
    )

    def __post_init__(self) -> None:
        self.subgroup_columns = comma_separated(self.subgroup_columns)


@dataclass(kw_only=True)
class DicomArguments(LabelTableColumns, PrepareArguments, WithTestSize):
    """DICOM files: class subfolders of them, or a CSV of paths and labels; split by patient,
    patient and study IDs replaced by keyed hashes."""

    source: Path | None = field(
        default=None,
        metadata={"help": "a folder of class subfolders of DICOM files (.dcm, or any file with "
                  "the DICM preamble), optionally in train/ val/ test/"},
    )  # fmt: skip
    csv_path: Path | None = field(
        default=None,
        metadata={"help": "instead of --source: a CSV of DICOM paths and labels",
                  "aliases": ["--csv"]},
    )  # fmt: skip
    window: str | None = field(
        default=None,
        metadata={"help": "CENTER,WIDTH in modality units (HU for CT), or a preset: "
                  f"{', '.join(WINDOW_PRESETS)}; overrides the files' own VOI LUT / window "
                  "(default: the file's, else its min-max range)"},
    )  # fmt: skip
    frames: Literal["first", "middle", "all"] = field(
        default="first",
        metadata={"help": "multi-frame files: the first or middle frame, or all (one row per "
                  "frame, a file's frames in one split)"},
    )  # fmt: skip
    bit_depth: int = field(
        default=8,
        metadata={"help": "8: store windowed 8-bit images; 16: store modality values (HU + "
                  "32768), windowed at train / predict time"},
    )  # fmt: skip
    id_salt_file: Path | None = field(
        default=None,
        metadata={"help": "a file holding the secret key of the patient / study / file "
                  "pseudonyms, or set MEDFT_ID_SALT (default: one drawn once and kept in "
                  "OUTPUT.id-salt beside the output folder)", "metavar": "FILE"},
    )  # fmt: skip
    id_salt: str | None = field(
        default=None,
        metadata={"help": argparse.SUPPRESS},  # refused: see __post_init__
    )
    force: bool = field(
        default=False, metadata={"help": "also read files without a DICOM file meta header"}
    )
    age: bool = field(
        default=False,
        metadata={"help": "keep the patient's age in whole years (90: above 89; none over 100)"},
    )
    subgroup_columns: list[str] = subgroup_columns_field(
        "keep the patient's sex (M / F / O) and age band (0-17 ... 80+) to compare a model's "
        "results by: sex, age_band (no other tag: names and IDs identify patients)"
    )

    def __post_init__(self) -> None:
        self.subgroup_columns = comma_separated(self.subgroup_columns)
        if self.id_salt is not None:
            raise MedftError(
                "--id-salt on the command line shows in `ps` and shell history; put the salt in a "
                "file named by --id-salt-file FILE, or in the MEDFT_ID_SALT environment variable."
            )
        if (self.source is None) == (self.csv_path is None):
            raise MedftError(
                "medft prepare dicom needs --source DIR (class subfolders) or --csv FILE "
                "(paths and labels), not both."
            )
        if self.bit_depth not in BIT_DEPTHS:
            raise MedftError(f"--bit-depth must be 8 or 16, got {self.bit_depth}.")
        parse_window(self.window)  # a bad window stops here, naming it


PREPARE_SOURCES: dict[str, type[PrepareArguments]] = {
    "brain-tumor-44c": BrainTumorArguments,
    "chestxray14": ChestXray14Arguments,
    "folder": FolderArguments,
    "csv": CsvArguments,
    "dicom": DicomArguments,
}


# synthesize -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SynthesizeBrainArguments:
    """44 class folders of fake MRI slices."""

    output: Path = field(metadata=positional("folder to write"))
    per_class: int = field(default=12, metadata={"help": "scans per class"})
    image_size: int = field(default=96, metadata={"help": "pixels"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    include_bad_files: bool = field(
        default=False, metadata={"help": "add empty, truncated and non-image files"}
    )


@dataclass(kw_only=True)
class SynthesizeChestArguments:
    """The NIH layout of fake radiographs."""

    output: Path = field(metadata=positional("folder to write"))
    n_patients: int = field(default=40, metadata={"help": "patients", "aliases": ["--patients"]})
    image_size: int = field(default=128, metadata={"help": "pixels"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    num_proc: int = field(default=1, metadata={"help": "processes writing images"})


SYNTHESIZED = {"brain-tumor-44c": SynthesizeBrainArguments, "chestxray14": SynthesizeChestArguments}
