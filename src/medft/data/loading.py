"""Load the dataset a recipe names, and read the task (labels, single / multi-label) off it."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import PIL.Image
from datasets import Dataset, DatasetDict, Image, load_dataset, load_from_disk

from medft.data.sources import is_shard_source
from medft.errors import MedftError, first_line
from medft.tasks import TaskInfo


def read_dataset(name: str, config: str | None = None) -> DatasetDict:
    """A folder written by `medft prepare` (or `save_to_disk`), or a Hub dataset id."""
    path = Path(name).expanduser()
    if path.exists():
        if is_shard_source(name):
            raise MedftError(
                f"dataset_name {path} holds shards to stream, which `medft train` reads (with "
                "max_steps) and this command does not; prepare an Arrow dataset for it "
                "(`medft prepare ...` without --format webdataset)."
            )
        if not (path / "dataset_dict.json").is_file():
            raise MedftError(
                f"dataset_name {path} is not a prepared dataset (no dataset_dict.json); "
                "convert it first with `medft prepare folder --source ...` or `medft prepare csv`."
            )
        return load_from_disk(str(path))
    try:
        return load_dataset(name, config)
    except Exception as error:  # the Hub client raises many types; all mean "cannot load it"
        raise MedftError(
            f"dataset_name '{name}' is neither a local folder nor a loadable Hub dataset "
            f"({type(error).__name__}: {first_line(error, 200)})."
        ) from None


def check_split(dataset: DatasetDict, split: str, name: str) -> None:
    """Stop with the splits there are when ``split`` (a --split option) is not one of them."""
    if split not in dataset:
        raise MedftError(
            f"dataset {name} has no split '{split}' (it has {', '.join(dataset)}); "
            "choose one with --split."
        )


def task_of(
    dataset: DatasetDict, split: str, image_column: str, label_column: str | None
) -> TaskInfo:
    features = dataset[split].features
    if image_column not in features or not isinstance(features[image_column], Image):
        raise MedftError(
            f"the dataset has no image column '{image_column}' (columns: {', '.join(features)}); "
            "set image_column in the recipe."
        )
    candidates = [label_column] if label_column else ["labels", "label"]
    for column in candidates:
        task = TaskInfo.from_features(features, image_column, column)
        if task is not None:
            return task
    raise MedftError(
        f"found no label column {' or '.join(repr(c) for c in candidates)} holding a ClassLabel "
        f"(or a list of them) among {', '.join(features)}; set label_column, or prepare the "
        "data with `medft prepare`."
    )


def require_splits(available, required, name: str) -> None:
    """Stop with the splits there are when one of ``required`` (train_split, eval_split) is
    not among the ``available`` ones."""
    missing = [split for split in required if split not in available]
    if missing:
        raise MedftError(
            f"dataset {name} has no split(s) {', '.join(missing)} (it has "
            f"{', '.join(available)}); set train_split / eval_split in the recipe."
        )


def load_training_data(
    name: str,
    *,
    config: str | None = None,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    image_column: str = "image",
    label_column: str | None = None,
) -> tuple[DatasetDict, TaskInfo]:
    """The dataset's ``splits`` (the first two required, the rest optional) and its task."""
    dataset = read_dataset(name, config)
    required, optional = splits[:2], [s for s in splits[2:] if s]
    require_splits(dataset, required, name)
    kept = DatasetDict(
        {split: dataset[split] for split in [*required, *optional] if split in dataset}
    )
    return kept, task_of(kept, required[0], image_column, label_column)


def shorter_side(dataset: Dataset, image_column: str, sample: int = 64) -> int | None:
    """The median shorter side, in pixels, of up to ``sample`` stored images (headers only);
    None when none of them can be opened."""
    rows = dataset.cast_column(image_column, Image(decode=False)).select(
        range(min(sample, len(dataset)))
    )
    sides = []
    for stored in rows[image_column]:
        try:
            source = io.BytesIO(stored["bytes"]) if stored["bytes"] else stored["path"]
            with PIL.Image.open(source) as image:
                sides.append(min(image.size))
        except (OSError, ValueError, TypeError):  # unreadable ones are prepare's to report
            continue
    return int(statistics.median(sides)) if sides else None
