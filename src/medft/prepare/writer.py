"""Turn a `SourceListing` into a `DatasetDict` on disk, in parallel, streaming, losing nothing.

Each split is cut into chunks of consecutive examples. A worker process reads
and checks the images of one chunk (`medft.prepare.images.read_image`) and writes
them straight into one Arrow shard of the final `save_to_disk` layout, so image
bytes are read once, written once, never pass between processes, and memory
holds one write batch per worker. The main process only counts progress and
collects what was skipped, and why. The dataset is moved into place when
complete, so an interrupted run never leaves a half-written dataset that looks
whole.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetInfo, Features, Value, load_from_disk
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import generate_random_fingerprint

from medft.errors import MedftError
from medft.near_duplicates import HASH_COLUMN
from medft.prepare.images import STORE_AS_IS, ImageOptions, read_image
from medft.prepare.listing import SourceListing
from medft.prepare.private import write_private_record
from medft.prepare.regroup import WrittenRow, draw_sheet, keep_near_copies_together
from medft.prepare.report import build_report, write_report
from medft.progress import progress_bar

DATASET_MARKERS = ("dataset_dict.json", "prepare_report.json")
MAX_CHUNK = 256  # images per shard at most: ~100 MB of full-size chest X-rays
CHUNKS_PER_WORKER = 8  # enough chunks that workers finish together on small datasets


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


@dataclass
class Chunk:
    """Consecutive examples of one split, written by one worker into one Arrow shard."""

    split: str
    index: int
    path: Path
    features: Features
    label_column: str
    image_options: ImageOptions
    examples: list[tuple[str, int | None, Any, dict[str, Any]]]  # (path, frame, label, metadata)
    start: int = 0  # of its examples in the split's list


@dataclass
class ChunkResult:
    split: str
    index: int
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason)
    stats: Counter[str] = field(default_factory=Counter)
    positions: list[int] = field(default_factory=list)  # in the chunk, of each row written
    hashes: list[str | None] = field(default_factory=list)  # of each row written, if asked


def write_chunk(chunk: Chunk) -> ChunkResult:
    """Read, check and write the images of one chunk (runs in a worker process)."""
    result = ChunkResult(chunk.split, chunk.index)
    with ArrowWriter(features=chunk.features, path=str(chunk.path)) as writer:
        for position, (path, frame, label, metadata) in enumerate(chunk.examples):
            image_id = metadata.get("image_id", path)
            image = read_image(path, chunk.image_options, frame)
            if image.error:
                result.skipped.append((image_id, image.error))
                continue
            result.stats[f"mode {image.source_mode}"] += 1
            result.stats["reencoded"] += image.reencoded
            result.stats["metadata_stripped"] += image.metadata_stripped
            result.stats.update(f"note {note}" for note in image.notes)
            row = {
                "image": {"bytes": image.data, "path": image_id},
                chunk.label_column: label,
                **metadata,
            }
            if HASH_COLUMN in chunk.features:
                row[HASH_COLUMN] = image.perceptual_hash
            writer.write(chunk.features.encode_example(row))
            result.written += 1
            result.positions.append(position)
            result.hashes.append(image.perceptual_hash)
        writer.finalize()
    return result


def chunks_of(
    listing: SourceListing, folder: Path, options: ImageOptions, num_proc: int, features: Features
):
    """Every split cut into chunks, small enough to keep all ``num_proc`` workers busy."""
    total = listing.num_examples()
    size = max(1, min(MAX_CHUNK, -(-total // (num_proc * CHUNKS_PER_WORKER))))
    for split, examples in listing.splits.items():
        (folder / split).mkdir(parents=True)
        for index, start in enumerate(range(0, max(len(examples), 1), size)):
            part = examples[start : start + size]
            yield Chunk(
                split=split,
                index=index,
                path=folder / split / f"chunk-{index:05d}.arrow",
                features=features,
                label_column=listing.task.label_column,
                image_options=options,
                examples=[(str(e.path), e.frame, e.label, e.metadata) for e in part],
                start=start,
            )


def run_chunks(chunks: list[Chunk], num_proc: int) -> Iterator[ChunkResult]:
    """Write the chunks, in parallel when ``num_proc`` > 1, as they finish."""
    if num_proc <= 1:
        yield from map(write_chunk, chunks)
        return
    with multiprocessing.get_context("spawn").Pool(min(num_proc, len(chunks))) as pool:
        yield from pool.imap_unordered(write_chunk, chunks)


def finish_split(folder: Path, split: str, features: Features) -> None:
    """Name the shards data-0000i-of-0000n.arrow and write the split's state and info,
    as `Dataset.save_to_disk` would."""
    shards = sorted(folder.glob("chunk-*.arrow"))
    names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for shard, name in zip(shards, names):
        shard.rename(folder / name)
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": generate_random_fingerprint(),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    DatasetInfo(features=features).write_to_directory(str(folder))


def collect(
    results: Iterable[ChunkResult], listing: SourceListing, progress: Callable[[int], Any]
) -> tuple[Counter[str], list[ChunkResult]]:
    """Count progress as chunks finish; record skipped files in listing order; the results in
    that order."""
    stats: Counter[str] = Counter()
    finished = []
    for result in results:
        progress(result.written + len(result.skipped))
        stats.update(result.stats)
        finished.append(result)
    order = {split: rank for rank, split in enumerate(listing.splits)}
    finished.sort(key=lambda r: (order[r.split], r.index))
    for result in finished:
        for image_id, reason in result.skipped:
            listing.skip(image_id, reason, result.split)
    return stats, finished


def written_rows(
    chunks: list[Chunk], results: list[ChunkResult], listing: SourceListing
) -> list[WrittenRow]:
    """Every stored image: its shard, its row there, its example and its hash."""
    chunk_of = {(chunk.split, chunk.index): chunk for chunk in chunks}
    rows = []
    for result in results:
        chunk = chunk_of[(result.split, result.index)]
        for row, (position, value) in enumerate(zip(result.positions, result.hashes)):
            example = listing.splits[chunk.split][chunk.start + position]
            rows.append(WrittenRow(chunk.split, chunk.path, row, example, value))
    return rows


def write_dataset(
    listing: SourceListing,
    output: str | Path,
    *,
    image_options: ImageOptions = STORE_AS_IS,
    num_proc: int | None = None,
    overwrite: bool = False,
    options: dict[str, Any] | None = None,
    name: str | None = None,
    private_options: dict[str, str] | None = None,
    near_duplicates: int | None = None,
) -> dict[str, Any]:
    """Read every listed image and save the `DatasetDict` and ``prepare_report.json`` to
    ``output``, and the paths (the source, ``private_options``, skipped files) to the private
    record beside it.

    Returns the report. ``name`` (default: the output folder's) is how the report knows it.
    With ``near_duplicates`` (a Hamming distance), each image's perceptual hash is stored and
    near copies are kept in one split (`medft.prepare.regroup`).
    """
    output = Path(output).expanduser().resolve()
    check_output_folder(output, overwrite)  # again, right before anything is deleted
    if listing.num_examples() == 0:
        raise MedftError(f"No images found in {listing.source}; check --source.")
    num_proc = num_proc or os.cpu_count() or 1
    partial_output = output.parent / f".{output.name}.medft-partial"
    shutil.rmtree(partial_output, ignore_errors=True)

    hashing = near_duplicates is not None
    features = listing.features()
    if hashing:
        features[HASH_COLUMN] = Value("string")
    image_options = image_options._replace(hash_images=hashing)
    chunks = list(chunks_of(listing, partial_output, image_options, num_proc, features))
    with progress_bar(total=listing.num_examples(), desc="Reading images", unit="img") as bar:
        stats, results = collect(run_chunks(chunks, num_proc), listing, bar.update)
    leakage = None
    if hashing:
        rows = written_rows(chunks, results, listing)
        leakage, after, final = keep_near_copies_together(rows, listing, near_duplicates)
    for split in listing.splits:
        finish_split(partial_output / split, split, features)
    (partial_output / "dataset_dict.json").write_text(json.dumps({"splits": list(listing.splits)}))
    if leakage is not None:
        leakage["contact_sheet"] = draw_sheet(after, final, partial_output)

    dataset = load_from_disk(str(partial_output))
    report = build_report(listing, dataset, stats, options or {}, name or output.name, leakage)
    write_report(report, partial_output)
    if output.exists():
        shutil.rmtree(output)
    partial_output.rename(output)
    write_private_record(listing, output, private_options or {})
    return report
