"""Streamed sources: the `dataset_name` of a run that reads its images as it trains, opened as
`datasets` IterableDatasets.

A streamed source is a Hub dataset with `streaming: true`, or shards read where they lie:
a folder (local, or any fsspec URL that lists: hf://, s3://...) of Parquet (``*.parquet``)
or WebDataset (``*.tar``) files laid out by split as `datasets` lays them out (``train/``,
``train-00000.parquet``...), or a pattern with ``{split}`` in it
(``https://host/shards/{split}-00000.tar``). Parquet and Hub data carry their features;
WebDataset shards carry theirs in ``dataset_info.json`` beside them (`medft prepare ...
--format webdataset` writes it): each sample is ``KEY.COLUMN`` for an image column (its
stored bytes) and ``KEY.COLUMN.json`` for any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from datasets import DatasetInfo, Features, Image, IterableDatasetDict, load_dataset
from datasets.config import DATASET_INFO_FILENAME
from datasets.data_files import DataFilesDict, get_data_patterns

from medft.errors import MedftError, first_line

if TYPE_CHECKING:
    from medft.config import DataArguments, MedftTrainingArguments

SHARD_BUILDERS = {".parquet": "parquet", ".tar": "webdataset"}
SPLIT = "{split}"
JSON_FIELD = ".json"


def is_shard_source(name: str) -> bool:
    """Shards read where they lie: a ``{split}`` pattern, a URL, or a local folder that is
    not a prepared (Arrow) dataset but holds shards or a features file."""
    if SPLIT in name or "://" in name:
        return True
    path = Path(name).expanduser()
    if not path.is_dir() or (path / "dataset_dict.json").is_file():
        return False
    return (path / DATASET_INFO_FILENAME).is_file() or any(
        shard.suffix in SHARD_BUILDERS for shard in path.rglob("*") if shard.is_file()
    )


def shard_files(name: str, splits: list[str]) -> tuple[dict[str, list[str]], str]:
    """Each split's shards, and the `datasets` builder that reads them (parquet or
    webdataset); one line when there are none, or both kinds."""
    allowed = list(SHARD_BUILDERS)
    try:
        if SPLIT in name:
            patterns = {split: [name.replace(SPLIT, split)] for split in splits}
            files = DataFilesDict.from_patterns(patterns, allowed_extensions=allowed)
        else:
            base = str(Path(name).expanduser()) if "://" not in name else name
            files = DataFilesDict.from_patterns(
                get_data_patterns(base), base_path=base, allowed_extensions=allowed
            )
    except Exception as error:  # datasets raises FileNotFoundError or EmptyDatasetError
        raise MedftError(
            f"dataset_name {name} holds no *.parquet or *.tar shards ({first_line(error, 160)}); "
            "write them with `medft prepare ... --format webdataset`, or point at the folder "
            "that holds them."
        ) from None
    kinds = {Path(str(file).split("::")[0]).suffix for shards in files.values() for file in shards}
    if len(kinds) > 1:
        raise MedftError(
            f"dataset_name {name} mixes Parquet and WebDataset shards; keep one format per "
            "dataset (a folder each)."
        )
    if not kinds:
        raise MedftError(f"dataset_name {name} holds no *.parquet or *.tar shards.")
    return {split: list(shards) for split, shards in files.items()}, SHARD_BUILDERS[kinds.pop()]


def shard_root(name: str) -> str:
    """The folder the shards (and a WebDataset's features file) sit in."""
    return name.split(SPLIT)[0].rsplit("/", 1)[0] if SPLIT in name else name


def wire_features(features: Features) -> Features:
    """The features as WebDataset samples hold them: images as ``COLUMN``, others as
    ``COLUMN.json``."""
    return Features(
        {
            column if isinstance(kind, Image) else column + JSON_FIELD: kind
            for column, kind in features.items()
        }
    )


def webdataset_features(name: str) -> Features:
    """The features written beside WebDataset shards; one line when there are none."""
    root = shard_root(name)
    try:
        features = DatasetInfo.from_directory(root).features
    except FileNotFoundError:
        features = None
    if not features:
        raise MedftError(
            f"the WebDataset shards of {name} have no {DATASET_INFO_FILENAME} (their features: "
            "the image and label columns, the class names) beside them; write the shards with "
            "`medft prepare ... --format webdataset`, or add the file "
            "(`DatasetInfo(features=...).write_to_directory(folder)`)."
        )
    return features


def open_stream(name: str, config: str | None, splits: list[str]) -> IterableDatasetDict:
    """The source's splits as IterableDatasets with their features."""
    if not is_shard_source(name):
        try:
            return load_dataset(name, config, streaming=True)
        except Exception as error:  # the Hub client raises many types
            raise MedftError(
                f"dataset_name '{name}' cannot be streamed ({type(error).__name__}: "
                f"{first_line(error, 200)})."
            ) from None
    files, builder = shard_files(name, splits)
    if builder == "parquet":
        return load_dataset("parquet", data_files=files, streaming=True)
    features = webdataset_features(name)
    streams = load_dataset(
        "webdataset", data_files=files, streaming=True, features=wire_features(features)
    )
    renamed = {
        column + JSON_FIELD: column
        for column, kind in features.items()
        if not isinstance(kind, Image)
    }
    return IterableDatasetDict(  # renamed undecoded: a rename is a map, which would re-encode
        {
            split: stream.decode(False).rename_columns(renamed).decode(True)
            for split, stream in streams.items()
        }
    )


def is_streamed(data_args: DataArguments) -> bool:
    return data_args.streaming or is_shard_source(data_args.dataset_name)


def refuse_unstreamable(data_args: DataArguments, args: MedftTrainingArguments) -> None:
    """One line for each setting that needs the whole training split up front."""
    if args.max_steps is None or args.max_steps <= 0:
        raise MedftError(
            f"dataset_name {data_args.dataset_name} is streamed, whose size is not known up front: "
            "set max_steps (the optimizer steps to train) in the recipe."
        )
    needs_whole_split = {
        "cv_folds": (data_args.cv_folds is not None, "cut folds from a prepared dataset"),
        "max_train_samples": (
            data_args.max_train_samples is not None,
            "max_steps bounds a streamed run",
        ),
        "data_cache": (
            data_args.data_cache in ("device", "ram"),
            "set data_cache: none or auto (a stream is decoded by the loader workers)",
        ),
        "sampler": (args.sampler == "weighted", "set sampler: random"),
        "class_weighting": (args.class_weighting == "balanced", "set class_weighting: none"),
        "training_mode": (args.probes, "set training_mode: finetune"),
    }
    for key, (refused, advice) in needs_whole_split.items():
        if refused:
            raise MedftError(
                f"{key}: {getattr(data_args, key, None) or getattr(args, key)} needs the whole "
                f"training split up front, which a streamed dataset_name does not give; {advice}, "
                "or prepare the data (`medft prepare`) and train on the prepared folder."
            )
