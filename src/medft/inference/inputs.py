"""What to score: image and DICOM files (every frame, for a model trained on every frame),
folders searched recursively, and prepared datasets' splits, with a name per image; and the
labelled splits a saved model is evaluated on, checked to hold the labels it predicts (after a
`--label-map`, when one maps another dataset's labels onto them)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from medft.data.loading import check_split, read_dataset, task_of
from medft.errors import MedftError
from medft.formats.dicom_reading import UnreadableDicom, is_dicom_file, number_of_frames, open_dicom
from medft.formats.dicom_settings import DicomSettings
from medft.formats.image_files import IMAGE_EXTENSIONS, is_image_file, is_visible_file, scan_images
from medft.inference.classifier import saved_task
from medft.inference.label_map import LabelMap
from medft.tasks import TaskInfo


def is_image_or_dicom(path: Path) -> bool:
    return is_image_file(path) or (is_visible_file(path) and is_dicom_file(path))


@dataclass
class Inputs:
    """Images given on the command line, as files and dataset splits, with a name per image."""

    files: list[Path] = field(default_factory=list)
    splits: list[Dataset] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)  # the prepared folder of each split
    names: list[str] = field(default_factory=list)  # files first, then dataset rows
    ignored: Counter[str] = field(default_factory=Counter)
    frames: list[int | None] = field(default_factory=list)  # per file: None, or a DICOM frame


def every_frame(files: list[Path], force: bool) -> tuple[list[Path], list[int | None]]:
    """Each multi-frame DICOM file once per frame (as a model trained with --frames all saw
    it); other files once. A file whose header cannot be read stays, to be reported."""
    expanded, frames = [], []
    for path in files:
        count = 1
        if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS and is_dicom_file(path):
            with contextlib.suppress(UnreadableDicom):
                count = number_of_frames(open_dicom(path, force, stop_before_pixels=True))
        expanded += [path] * count
        frames += list(range(count)) if count > 1 else [None]
    return expanded, frames


def collect_inputs(
    paths: Sequence[str | Path], split: str = "test", dicom: DicomSettings | None = None
) -> Inputs:
    """Image and DICOM files (every frame, for a model trained on every frame: ``dicom``);
    folders, searched recursively; prepared datasets (a folder holding dataset_dict.json), of
    which ``split`` is read. A missing file stays in, to be reported."""
    inputs = Inputs()
    dataset_rows: list[str] = []
    for given in map(Path, paths):
        if (given / "dataset_dict.json").is_file():
            dataset = read_dataset(str(given))
            check_split(dataset, split, str(given))
            part = dataset[split]
            inputs.splits.append(part)
            inputs.datasets.append(given)
            ids = list(part["image_id"]) if "image_id" in part.column_names else None
            dataset_rows += [
                f"{given}:{split}:{ids[row] if ids else row}" for row in range(len(part))
            ]
        elif given.is_dir():
            inputs.files += scan_images(given, inputs.ignored, accept=is_image_or_dicom)
        else:
            inputs.files.append(given)
    inputs.frames = [None] * len(inputs.files)
    if dicom is not None and dicom.frames == "all":
        inputs.files, inputs.frames = every_frame(inputs.files, dicom.force)
    inputs.names = [
        str(path) if frame is None else f"{path} (frame {frame})"
        for path, frame in zip(inputs.files, inputs.frames)
    ] + dataset_rows
    if not inputs.names:
        ignored = sum(inputs.ignored.values())
        raise MedftError(
            f"found no images in {', '.join(map(str, paths))}"
            + (f" ({ignored} other files ignored)" if ignored else "")
            + "; give image files, folders of them, or a prepared dataset."
        )
    return inputs


def labelled_dataset(
    name: str, model: str | Path, *splits: str, label_map: LabelMap | None = None
) -> tuple[DatasetDict, TaskInfo]:
    """The prepared dataset ``name`` holding each of ``splits``, labelled as the model saved in
    ``model`` predicts (its labels mapped onto the model's by ``label_map`` first, if given),
    and its task (as the first of ``splits`` holds it)."""
    predicted = saved_task(model)
    dataset = read_dataset(name)
    for split in splits:
        check_split(dataset, split, name)
    task = task_of(dataset, splits[0], "image", None)
    if label_map is not None:
        dataset, task = label_map.apply(dataset, task, predicted, name)
    if not task.same_labels(predicted):
        raise MedftError(
            f"the model in {model} predicts {predicted.task} labels "
            f"{', '.join(predicted.label_names)}, but {name} has {task.task} "
            f"labels {', '.join(task.label_names)}; evaluate it on the data it was trained for, "
            "or map the dataset's labels onto the model's (medft evaluate --label-map)."
        )
    return dataset, task
