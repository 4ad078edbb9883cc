"""What a source reader hands the writer: examples per split, label names, what it passed over.

A source module (brain, NIH, folder, CSV, DICOM) only looks at file names, label
tables and DICOM headers; it never decodes an image. Decoding, checking and storing happen once,
in `medft.prepare.writer`, for every source alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Features, Image, Value

from medft.formats.dicom_settings import DicomSettings
from medft.prepare.splits import SPLITS

if TYPE_CHECKING:
    from medft.tasks import TaskInfo


@dataclass
class Example:
    path: Path
    label: int | list[int]
    metadata: dict[str, Any]
    frame: int | None = None  # of a multi-frame DICOM file
    # how the reader split it, so that the split can be made again once near copies are known:
    # the split its source gave it (None: carved), its stratum (class), and what keeps it with
    # others in one split (a patient, identical bytes)
    given_split: str | None = None
    stratum: int | None = None
    group: Hashable | None = None


@dataclass
class Skipped:
    file: str
    reason: str
    split: str | None = None


@dataclass
class SourceListing:
    """Everything known about a source before its images are read. The reader gives its
    label names and whether an image has one label or several; the listing keeps them as
    its `task`."""

    source_type: str
    source: str
    label_names: InitVar[list[str]]
    multi_label: InitVar[bool]
    splits: dict[str, list[Example]]
    metadata_features: dict[str, Value]
    skipped: list[Skipped] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)
    dicom: DicomSettings | None = None  # the files are DICOM, to be read with these settings
    # image_id -> the file's path in the source, where image_id is a keyed hash (DICOM): for
    # the private record beside the dataset only (`medft.prepare.private`)
    source_paths: dict[str, str] = field(default_factory=dict)
    # the reader's split sizes and seed, to split again once near copies are known
    carve_sizes: dict[str, float] = field(default_factory=dict)
    carve_seed: int = 42
    # metadata columns that are attributes of the patient or the acquisition (sex, age band,
    # view) by which a model's results are compared group against group
    subgroup_columns: list[str] = field(default_factory=list)
    task: TaskInfo = field(init=False)

    def __post_init__(self, label_names: list[str], multi_label: bool) -> None:
        from medft.tasks import TaskInfo  # imports torch: not for the writer's worker processes

        self.task = TaskInfo.prepared(label_names, multi_label)
        self.splits = {split: self.splits.get(split, []) for split in SPLITS}

    def features(self) -> Features:
        label = {self.task.label_column: self.task.label_feature()}
        return Features({"image": Image(), **label, **self.metadata_features})

    def skip(self, file: str, reason: str, split: str | None = None) -> None:
        self.skipped.append(Skipped(file, reason, split))

    def num_examples(self) -> int:
        return sum(len(examples) for examples in self.splits.values())
