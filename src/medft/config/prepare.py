"""The options of `medft prepare` and `medft synthesize`.

Each source has its reader's options (`FolderOptions`, `CsvOptions`, `DicomOptions`, ...:
what `medft.prepare.folder.list_image_folder` and the other readers take) and the
command's (`FolderArguments`, ...: those and `PrepareArguments`, where and how the dataset is
written, which `medft.prepare.prepare_dataset` takes). `medft.prepare.SOURCES` pairs each
source's command options with its reader.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medft.config.fields import comma_separated, positional, subgroup_columns_field
from medft.errors import MedftError
from medft.formats.dicom_settings import WINDOW_PRESETS, DicomSettings, parse_window
from medft.near_duplicates import DEFAULT_THRESHOLD

MIN_IMAGE_SIZE = 8  # pixels of the shorter side
NAME_SEPARATORS = ("/", "\\")
FORMATS = ("arrow", "webdataset")
SALT_ON_THE_COMMAND_LINE = (
    "--id-salt on the command line shows in `ps` and shell history; put the salt in a file "
    "named by --id-salt-file FILE, or in the MEDFT_ID_SALT environment variable."
)


@dataclass(kw_only=True)
class PrepareArguments:
    """What every `medft prepare` source takes: where and how to write the dataset (what
    `prepare_dataset` does), and the Hub dataset the command then pushes it to."""

    output: Path = field(metadata={"help": "folder to write to"})
    name: str | None = field(
        default=None,
        metadata={
            "help": "the dataset's name in its report and card, which never hold a path "
            "(default: the output folder's name); the paths go to OUTPUT.private.json "
            "beside the output folder"
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "resize so the shorter side is N (aspect kept, never upscaled); "
            "default: store the original encoded bytes"
        },
    )
    png_compression: int = field(
        default=0,
        metadata={
            "help": "zlib level (0-9) for images medft re-encodes (resized, rotated, "
            "16-bit...); 0 is fastest to write and to decode each epoch, 1-9 are smaller"
        },
    )
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

    format: str = field(
        default="arrow",
        metadata={
            "help": "arrow: the folder `medft train` and every command read; webdataset: tar "
            "shards (per split, --shard-size images each, the features in dataset_info.json) "
            "that `medft train` streams (see the README: Streaming data larger than disk)",
            "choices": FORMATS,
        },
    )
    shard_size: int = field(
        default=1000, metadata={"help": "--format webdataset: images per tar shard"}
    )
    near_duplicates: str = field(
        default=str(DEFAULT_THRESHOLD),
        metadata={
            "help": "keep near copies of an image (resized, re-encoded, cropped a few "
            "pixels, greyscale) in one split: perceptual hashes within this many bits "
            "(0-16), or off; the report counts them and draws the largest groups"
        },
    )

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            raise MedftError(
                f"--image-size must be at least {MIN_IMAGE_SIZE} pixels, got {self.image_size}."
            )
        if not 0 <= self.png_compression <= 9:
            raise MedftError(f"--png-compression must be 0-9, got {self.png_compression}.")
        if self.format not in FORMATS:
            raise MedftError(f"--format must be one of {', '.join(FORMATS)}, got {self.format}.")
        if self.shard_size < 1:
            raise MedftError(f"--shard-size must be at least 1, got {self.shard_size}.")
        if self.format == "webdataset" and self.push_to_hub:
            raise MedftError(
                "--push-to-hub pushes an Arrow dataset; with --format webdataset, upload the "
                "output folder instead (`hf upload REPO_ID OUTPUT --repo-type dataset`)."
            )
        name = self.name
        if name is not None and (not name.strip() or any(c in name for c in NAME_SEPARATORS)):
            raise MedftError(f"--name {name!r} must be a name, not a path (no / or \\).")


# the readers' options -------------------------------------------------------------------------


@dataclass(kw_only=True)
class SplitSeed:
    """The seed of the splits medft carves: the same seed, the same splits."""

    seed: int = field(default=42, metadata={"help": "split seed"})


@dataclass(kw_only=True)
class SplitOptions(SplitSeed):
    """The shares of a source's examples carved into validation and test where the source
    gives no such split (stratified, grouped, seeded)."""

    val_size: float = field(default=0.15, metadata={"help": "validation fraction"})
    test_size: float = field(default=0.15, metadata={"help": "test fraction"})

    @property
    def sizes(self) -> dict[str, float]:
        return {"validation": self.val_size, "test": self.test_size}


@dataclass(kw_only=True)
class BrainTumorOptions(SplitOptions):
    """What `list_brain_tumor_44c` reads."""

    source: Path = field(metadata={"help": "the unzipped download"})
    task: Literal["multiclass", "binary"] = field(
        default="multiclass", metadata={"help": "44 classes, or tumour vs normal"}
    )


@dataclass(kw_only=True)
class ChestXray14Options(SplitSeed):
    """What `list_chestxray14` reads: the official test list, validation carved by patient."""

    source: Path = field(metadata={"help": "folder with images_001 ..."})
    views: Literal["PA", "AP"] | None = field(
        default=None, metadata={"help": "keep only this view position"}
    )
    val_size: float = field(default=0.1, metadata={"help": "validation fraction of the patients"})


@dataclass(kw_only=True)
class FolderOptions(SplitOptions):
    """What `list_image_folder` reads."""

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
class CsvOptions(LabelTableColumns, SplitOptions):
    """What `list_csv` reads."""

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
class DicomOptions(LabelTableColumns, SplitOptions):
    """What `list_dicom` reads. Patient and study IDs become keyed hashes; the key is
    ``id_salt`` (Python only: on the command line it would show), the one the file
    ``id_salt_file`` or $MEDFT_ID_SALT holds, or one drawn once and kept beside ``output``."""

    source: Path | None = field(
        default=None,
        metadata={
            "help": "a folder of class subfolders of DICOM files (.dcm, or any file with "
            "the DICM preamble), optionally in train/ val/ test/"
        },
    )
    csv_path: Path | None = field(
        default=None,
        metadata={
            "help": "instead of --source: a CSV of DICOM paths and labels",
            "aliases": ["--csv"],
        },
    )
    window: str | None = field(
        default=None,
        metadata={
            "help": "CENTER,WIDTH in modality units (HU for CT), or a preset: "
            f"{', '.join(WINDOW_PRESETS)}; overrides the files' own VOI LUT / window "
            "(default: the file's, else its min-max range)"
        },
    )
    frames: Literal["first", "middle", "all"] = field(
        default="first",
        metadata={
            "help": "multi-frame files: the first or middle frame, or all (one row per "
            "frame, a file's frames in one split)"
        },
    )
    bit_depth: int = field(
        default=8,
        metadata={
            "help": "8: store windowed 8-bit images; 16: store modality values (HU + "
            "32768), windowed at train / predict time"
        },
    )
    id_salt_file: Path | None = field(
        default=None,
        metadata={
            "help": "a file holding the secret key of the patient / study / file "
            "pseudonyms, or set MEDFT_ID_SALT (default: one drawn once and kept in "
            "OUTPUT.id-salt beside the output folder)",
            "metavar": "FILE",
        },
    )
    id_salt: str | None = field(
        default=None,
        metadata={"help": argparse.SUPPRESS, "refused": SALT_ON_THE_COMMAND_LINE},
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
    output: Path | None = field(
        default=None, metadata={"help": "the dataset's folder: a salt drawn is kept beside it"}
    )  # the command's output (`DicomArguments`)

    def __post_init__(self) -> None:
        self.subgroup_columns = comma_separated(self.subgroup_columns)
        if (self.source is None) == (self.csv_path is None):
            raise MedftError(
                "medft prepare dicom needs --source DIR (class subfolders) or --csv FILE "
                "(paths and labels), not both."
            )
        self.settings()  # a bad window, bit depth or frames choice stops here, naming it

    def settings(self) -> DicomSettings:
        """How the files become images."""
        return DicomSettings(parse_window(self.window), self.bit_depth, self.frames, self.force)


# the commands: a source's options and where to write --------------------------------------------


@dataclass(kw_only=True)
class BrainTumorArguments(PrepareArguments, BrainTumorOptions):
    """Kaggle Brain Tumor MRI Images 44 Classes."""


@dataclass(kw_only=True)
class ChestXray14Arguments(PrepareArguments, ChestXray14Options):
    """NIH ChestX-ray14 (Kaggle or NIH layout)."""


@dataclass(kw_only=True)
class FolderArguments(PrepareArguments, FolderOptions):
    """Class-per-subfolder images, optionally in train/ val/ test/."""


@dataclass(kw_only=True)
class CsvArguments(PrepareArguments, CsvOptions):
    """A CSV of image paths and labels."""

    def __post_init__(self) -> None:
        PrepareArguments.__post_init__(self)
        CsvOptions.__post_init__(self)


@dataclass(kw_only=True)
class DicomArguments(PrepareArguments, DicomOptions):
    """DICOM files: class subfolders of them, or a CSV of paths and labels; split by patient,
    patient and study IDs replaced by keyed hashes."""

    def __post_init__(self) -> None:
        PrepareArguments.__post_init__(self)
        DicomOptions.__post_init__(self)


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
