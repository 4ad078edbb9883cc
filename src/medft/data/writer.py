"""Turn a `SourceListing` into a `DatasetDict` on disk, streaming, in parallel, losing nothing.

Worker processes read and check the images (`medft.data.images.read_image`);
the main process writes each result straight into the Arrow shards of the
final `save_to_disk` layout, so memory holds one write batch, not the dataset,
and every image is written once. Files that cannot be read are listed in
the report with their reason. The finished dataset is moved into place only
when complete, so an interrupted run never leaves a half-written dataset that
looks whole.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from datasets import DatasetInfo, Features, load_from_disk
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import generate_random_fingerprint
from tqdm.auto import tqdm

from medft.data.images import ImageResult, read_image
from medft.data.listing import SourceListing
from medft.data.report import build_report, write_report
from medft.errors import MedftError

DATASET_MARKERS = ("dataset_dict.json", "prepare_report.json")
READ_CHUNK_SIZE = 8
SHARD_BYTES = 500 * 2**20  # the shard size `save_to_disk` uses by default


def check_output_folder(output: Path, overwrite: bool) -> None:
    """Refuse to write over anything, and with --overwrite, over anything but a dataset."""
    if output.exists() and not output.is_dir():
        raise MedftError(f"--output {output} is a file; give a folder path.")
    if not output.exists() or not any(output.iterdir()):
        return
    if not overwrite:
        raise MedftError(
            f"--output {output} already holds files; choose another folder or pass --overwrite."
        )
    if not any((output / marker).exists() for marker in DATASET_MARKERS):
        raise MedftError(
            f"--output {output} holds files that are not a prepared dataset; "
            "refusing to delete them even with --overwrite. Choose another folder."
        )


def image_reader(num_proc: int) -> tuple[Callable[..., Iterator[ImageResult]], Callable[[], None]]:
    """An ordered ``imap(read_image, paths)`` over ``num_proc`` processes, and its closer."""
    if num_proc <= 1:
        return (lambda function, paths: map(function, paths)), (lambda: None)
    pool = multiprocessing.get_context("spawn").Pool(num_proc)

    def read_all(function: Callable[[str], ImageResult], paths: list[str]) -> Iterator[ImageResult]:
        return pool.imap(function, paths, chunksize=READ_CHUNK_SIZE)

    def close() -> None:
        pool.terminate()
        pool.join()

    return read_all, close


class ShardedSplitWriter:
    """Arrow shards of about ``SHARD_BYTES`` each in ``folder``, named as `save_to_disk` names them.

    Writing the final files directly (rather than staging a dataset and calling
    `save_to_disk`) reads every image once and writes it once, and keeps memory
    flat: `save_to_disk` would re-read a memory-mapped copy of the whole split.
    """

    def __init__(self, folder: Path, features: Features) -> None:
        self.folder, self.features = folder, features
        self.paths: list[Path] = []
        self.writer: ArrowWriter | None = None
        self.shard_bytes = 0
        folder.mkdir(parents=True)

    def open_shard(self) -> ArrowWriter:
        path = self.folder / f"shard-{len(self.paths):05d}.arrow"
        self.paths.append(path)
        self.shard_bytes = 0
        return ArrowWriter(features=self.features, path=str(path))

    def write(self, row: dict[str, Any], size: int) -> None:
        if self.writer is None or self.shard_bytes + size > SHARD_BYTES:
            self.close_shard()
            self.writer = self.open_shard()
        self.writer.write(self.features.encode_example(row))
        self.shard_bytes += size

    def close_shard(self) -> None:
        if self.writer is not None:
            self.writer.finalize()
            self.writer = None

    def finish(self, split: str) -> None:
        """Name the shards data-0000i-of-0000n.arrow and write the split's state and info."""
        if not self.paths:
            self.writer = self.open_shard()  # an empty split still gets a schema-only shard
        self.close_shard()
        names = [f"data-{i:05d}-of-{len(self.paths):05d}.arrow" for i in range(len(self.paths))]
        for path, name in zip(self.paths, names):
            path.rename(self.folder / name)
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": generate_random_fingerprint(),
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": split,
        }
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        DatasetInfo(features=self.features).write_to_directory(str(self.folder))


def write_split(
    listing: SourceListing,
    split: str,
    folder: Path,
    read_all: Callable[..., Iterator[ImageResult]],
    image_size: int | None,
    progress: tqdm,
    stats: Counter[str],
) -> None:
    examples = listing.splits[split]
    results = read_all(partial(read_image, image_size=image_size), [str(e.path) for e in examples])
    shards = ShardedSplitWriter(folder, listing.features())
    for example, result in zip(examples, results):
        progress.update()
        image_id = example.metadata.get("image_id", str(example.path))
        if result.error:
            listing.skip(image_id, result.error, split)
            continue
        stats[f"mode {result.source_mode}"] += 1
        stats["reencoded"] += result.reencoded
        row = {
            "image": {"bytes": result.data, "path": image_id},
            listing.label_column: example.label,
            **example.metadata,
        }
        shards.write(row, size=len(result.data))
    shards.finish(split)


def write_dataset(
    listing: SourceListing,
    output: str | Path,
    *,
    image_size: int | None = None,
    num_proc: int | None = None,
    overwrite: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read every listed image and save the `DatasetDict` and ``prepare_report.json`` to ``output``.

    Returns the report (also written beside the dataset).
    """
    output = Path(output).expanduser().resolve()
    check_output_folder(output, overwrite)  # again, right before anything is deleted
    if listing.num_examples() == 0:
        raise MedftError(f"No images found in {listing.source}; check --source.")
    num_proc = num_proc or os.cpu_count() or 1
    partial_output = output.parent / f".{output.name}.medft-partial"
    shutil.rmtree(partial_output, ignore_errors=True)
    partial_output.mkdir(parents=True)

    stats: Counter[str] = Counter()
    read_all, close = image_reader(num_proc)
    try:
        with tqdm(total=listing.num_examples(), desc="Reading images", unit="img") as progress:
            for split in listing.splits:
                folder = partial_output / split
                write_split(listing, split, folder, read_all, image_size, progress, stats)
    finally:
        close()
    (partial_output / "dataset_dict.json").write_text(json.dumps({"splits": list(listing.splits)}))

    report = build_report(listing, load_from_disk(str(partial_output)), stats, options or {})
    write_report(report, partial_output)
    if output.exists():
        shutil.rmtree(output)
    partial_output.rename(output)
    return report
