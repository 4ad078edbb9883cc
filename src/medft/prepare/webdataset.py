"""`medft prepare ... --format webdataset`: a prepared dataset rewritten as WebDataset tar
shards that `medft train` streams (`medft.data.sources`).

Each split becomes ``SPLIT/SPLIT-00000.tar``, ... of ``shard_size`` images each, in the
order prepare wrote them. A sample is ``KEY.COLUMN`` for an image column (its stored bytes,
as the Arrow dataset held them) and ``KEY.COLUMN.json`` for any other; the key is the image's
row number in its split. ``dataset_info.json`` beside the splits holds the features (column
types, class names), and the other files of the prepared folder (its report, DICOM settings)
stay. Nothing of the private record goes in: it stays beside the folder.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetInfo, Image, load_from_disk

from medft.data.sources import JSON_FIELD
from medft.progress import progress_bar

SPLITS_FILE = "dataset_dict.json"


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_split(
    rows: Dataset, folder: Path, split: str, shard_size: int, written: Callable[[int], object]
) -> list[Path]:
    """``rows`` as tar shards of ``shard_size`` samples in ``folder``; ``written`` counts
    them."""
    folder.mkdir(parents=True)
    images = [column for column, kind in rows.features.items() if isinstance(kind, Image)]
    for column in images:
        rows = rows.cast_column(column, Image(decode=False))
    shards = []
    for index, start in enumerate(range(0, len(rows), shard_size)):
        shards.append(folder / f"{split}-{index:05d}.tar")
        with tarfile.open(shards[-1], "w") as tar:
            part = rows.select(range(start, min(start + shard_size, len(rows))))
            for number, row in enumerate(part, start):
                key = f"{number:09d}"
                for column, value in row.items():
                    if column in images:
                        add_member(tar, f"{key}.{column}", value["bytes"])
                    else:
                        add_member(tar, f"{key}.{column}{JSON_FIELD}", json.dumps(value).encode())
                written(1)
    return shards


def rewrite_as_webdataset(output: Path, shard_size: int) -> None:
    """Replace the prepared (Arrow) dataset in ``output`` by WebDataset shards of it."""
    dataset = load_from_disk(str(output))
    partial = output.parent / f".{output.name}.medft-webdataset"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    total = sum(len(rows) for rows in dataset.values())
    with progress_bar(total=total, desc="Writing shards", unit="img") as bar:
        for split, rows in dataset.items():
            write_split(rows, partial / split, split, shard_size, bar.update)
    features = next(iter(dataset.values())).features
    DatasetInfo(features=features).write_to_directory(str(partial))
    for item in output.iterdir():
        if item.name not in dataset and item.name != SPLITS_FILE:
            shutil.move(str(item), partial / item.name)
    shutil.rmtree(output)
    partial.rename(output)
