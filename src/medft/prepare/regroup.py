"""Near copies kept in one split, once the images are read.

The source's reader splits the examples (stratified; by patient, or by identical file), and
the writer's workers hash every image they store. Here the near-duplicate groups join the
reader's own groups and the stored images are split again, as the reader split them (its
given splits kept, the rest carved in its proportions, stratified, seeded) but with the
joined groups as units, so that every chain of near copies lands in one split. The examples
are taken in the order of their image ids, so the split depends only on the images, their
labels and groups, and the seed. The written rows move from shard to shard as Arrow tables:
nothing is decoded twice. The leakage audit of the splits without and with the near-copy
groups goes to the report.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from medft.near_duplicates import hash_values, near_groups
from medft.prepare.leakage import LeakageAudit, Row, audit, contact_sheet
from medft.prepare.listing import Example, SourceListing
from medft.prepare.splits import assign_splits, joined_groups

SHEET_NAME = "near_duplicates.png"


@dataclass
class WrittenRow:
    """One stored image: the shard and row it was written to, and what it came from."""

    split: str
    shard: Path
    row: int
    example: Example
    hash: str


def read_table(shard: Path) -> pa.Table:
    with pa.memory_map(str(shard)) as source:
        return pa.ipc.open_stream(source).read_all()


def write_table(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def move_rows(rows: list[WrittenRow], settled: list[str]) -> list[Row]:
    """Move each row whose split changed into its new split's folder (a shard per source
    split), rewrite the shards it left, and return where every row ends up once the shards
    are named in order (`writer.finish_split` sorts them)."""
    leaving: dict[Path, list[int]] = defaultdict(list)
    arriving: dict[tuple[str, str], list[tuple[Path, int]]] = defaultdict(list)
    for item, (row, split) in enumerate(zip(rows, settled)):
        if split != row.split:
            leaving[row.shard].append(row.row)
            arriving[(row.split, split)].append((row.shard, item))
    tables = {shard: read_table(shard) for shard in leaving}
    staying: dict[Path, list[int]] = defaultdict(list)
    for row in rows:
        if row.shard in leaving:
            staying[row.shard].append(row.row)
    placed: dict[tuple[Path, int], tuple[Path, int]] = {}
    for (source, target), items in arriving.items():
        folder = rows[items[0][1]].shard.parent.parent / target
        moved = folder / f"chunk-moved-from-{source}.arrow"
        parts = [tables[shard].take([rows[item].row]) for shard, item in items]
        write_table(pa.concat_tables(parts), moved)
        for position, (_, item) in enumerate(items):
            placed[(rows[item].shard, rows[item].row)] = (moved, position)
    for shard, gone in leaving.items():
        table = tables[shard]
        kept = np.setdiff1d(np.arange(table.num_rows), gone)
        write_table(table.take(kept), shard.with_suffix(".tmp"))
        shard.with_suffix(".tmp").replace(shard)
        renumbered = {int(old): new for new, old in enumerate(kept)}
        for index in staying[shard]:
            if index in renumbered:
                placed[(shard, index)] = (shard, renumbered[index])
    return final_rows(rows, settled, placed, str(rows[0].shard.parent.parent) if rows else "")


def final_rows(
    rows: list[WrittenRow],
    settled: list[str],
    placed: dict[tuple[Path, int], tuple[Path, int]],
    dataset: str,
) -> list[Row]:
    """Each row's split and index once every split's shards are read in name order."""
    where = [placed.get((row.shard, row.row), (row.shard, row.row)) for row in rows]
    order: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for item, ((shard, index), split) in enumerate(zip(where, settled)):
        order[split].append((shard.name, index, item))
    final: list[Row | None] = [None] * len(rows)
    for split, entries in order.items():
        for position, (_, _, item) in enumerate(sorted(entries)):
            final[item] = Row(dataset, split, position)
    return final  # type: ignore[return-value]


def keep_near_copies_together(
    rows: list[WrittenRow], listing: SourceListing, threshold: int
) -> tuple[dict[str, Any], LeakageAudit, list[Row]]:
    """Settle the rows' splits, move what must move, and return the report's section, the
    audit after, and where each row ends up once the splits are finished."""
    values = hash_values([row.hash for row in rows])
    near = near_groups(values, threshold, progress=len(rows) > 20_000)
    before = [row.split for row in rows]
    settled = split_again(rows, near, listing)
    final = move_rows(rows, settled)
    patients = [row.example.metadata.get("patient_id") for row in rows]
    known = patients if any(p is not None for p in patients) else None
    without = audit(values, before, threshold, known)
    after = audit(values, settled, threshold, known)
    section = {
        "threshold": threshold,
        "images_moved": sum(1 for old, new in zip(before, settled) if old != new),
        "after": after.to_json(),
        "without_near_duplicate_groups": without.to_json(),
    }
    emptied = [
        split for split in listing.carve_sizes if split in set(before) and split not in set(settled)
    ]
    if emptied:
        section["warning"] = (
            f"the near-copy groups left {' and '.join(emptied)} empty: the largest group holds "
            f"{after.largest_group} of {after.images} images. Check the contact sheet; if "
            "they are not copies, lower --near-duplicates (or turn it off)."
        )
    return section, after, final


def split_again(rows: list[WrittenRow], near: np.ndarray, listing: SourceListing) -> list[str]:
    """Each row's split when the reader's groups are joined with the near-copy groups."""
    order = sorted(range(len(rows)), key=lambda i: image_key(rows[i].example))
    examples = [rows[i].example for i in order]
    strata = [example.stratum for example in examples]
    assigned = assign_splits(
        [example.given_split for example in examples],
        listing.carve_sizes,
        labels=None if any(stratum is None for stratum in strata) else strata,
        groups=joined_groups([e.group for e in examples], near[order].tolist()),
        seed=listing.carve_seed,
    )
    settled = [""] * len(rows)
    for position, split in zip(order, assigned):
        settled[position] = split
    return settled


def image_key(example: Example) -> tuple[str, int]:
    """What orders examples independently of how the reader listed them."""
    return str(example.metadata.get("image_id", example.path)), example.frame or 0


def draw_sheet(after: LeakageAudit, final: list[Row], folder: Path) -> str | None:
    """The contact sheet of the largest groups, in the dataset folder; its name or None."""
    sheet = contact_sheet(after, final, folder / SHEET_NAME)
    return sheet.name if sheet else None
