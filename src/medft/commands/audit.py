"""`medft audit`: the near-duplicate leakage audit of a prepared dataset, read-only.

For one dataset: its near-duplicate groups, how many sit across its splits, and how many
validation and test images have a near copy in train. With ``against``, the training images
of one dataset against every split of another (a model trained on one and tested on the
other). The hashes come from the `perceptual_hash` column `medft prepare` writes, or are
computed from the stored images in worker processes; nothing in the datasets is rewritten.
The report goes to the screen and, with a contact sheet of the largest groups, to a folder.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

from datasets import Image as ImageFeature

from medft.config.commands import AuditArguments
from medft.data.loading import read_dataset
from medft.errors import MedftError
from medft.formats.pixel_budget import ImageTooLarge
from medft.near_duplicates import HASH_COLUMN, hash_values, perceptual_hash
from medft.prepare.leakage import TRAIN, LeakageAudit, Row, audit, contact_sheet, format_audit
from medft.prepare.regroup import SHEET_NAME
from medft.progress import progress_bar

AUDIT_NAME = "leakage_audit.json"
ROWS_PER_TASK = 256


def hash_rows(task: tuple[str, str, int, int]) -> list[str | None]:
    """The hashes of rows [start, stop) of a split (in a worker process); None for an image
    that cannot be decoded."""
    import io

    from medft.formats.pixel_budget import opened_image

    name, split, start, stop = task
    part = read_dataset(name)[split].cast_column("image", ImageFeature(decode=False))
    hashes: list[str | None] = []
    for stored in part.select(range(start, stop))["image"]:
        source = io.BytesIO(stored["bytes"]) if stored["bytes"] is not None else stored["path"]
        try:
            with opened_image(source) as image:
                hashes.append(perceptual_hash(image))
        except (OSError, ValueError, ImageTooLarge):
            hashes.append(None)
    return hashes


def split_hashes(name: str, split: str, rows: int, num_proc: int) -> list[str | None]:
    """Hashes of a split's stored images, in worker processes."""
    tasks = [
        (name, split, start, min(start + ROWS_PER_TASK, rows))
        for start in range(0, rows, ROWS_PER_TASK)
    ]
    hashes: list[str | None] = []
    with progress_bar(total=rows, desc=f"Hashing {split}", unit="img") as bar:
        if num_proc <= 1 or len(tasks) <= 1:
            found_parts = map(hash_rows, tasks)
            for found in found_parts:
                hashes += found
                bar.update(len(found))
            return hashes
        with multiprocessing.get_context("spawn").Pool(min(num_proc, len(tasks))) as pool:
            for found in pool.imap(hash_rows, tasks):
                hashes += found
                bar.update(len(found))
    return hashes


@dataclass
class AuditResult:
    report: LeakageAudit
    unreadable: int
    rows: list[Row]  # each audited image, in the order the report counts them


def audit_datasets(options: AuditArguments) -> AuditResult:
    """The audit of ``options.dataset`` (every split), or of its train split against every
    split of ``options.against``."""
    name, against = options.dataset, options.against
    first = read_dataset(name)
    if against is not None and TRAIN not in first:
        raise MedftError(f"dataset {name} has no train split to audit {against} against.")
    sources = [(name, split) for split in first if against is None or split == TRAIN]
    if against is not None:
        sources += [(against, split) for split in read_dataset(against)]
    hashes, rows, labels, patients, unreadable = [], [], [], [], 0
    for source, split in sources:
        part = read_dataset(source)[split]
        if HASH_COLUMN in part.column_names:
            found = list(part.with_format(None)[HASH_COLUMN])
        else:
            found = split_hashes(source, split, len(part), options.num_proc)
        unreadable += sum(1 for value in found if value is None)
        shown = split if source == name else f"{Path(source).name}:{split}"
        ids = (
            list(part.with_format(None)["patient_id"])
            if "patient_id" in part.column_names
            else [None] * len(part)
        )
        for row, (value, patient) in enumerate(zip(found, ids)):
            if value is not None:
                hashes.append(value)
                rows.append(Row(str(Path(source).expanduser()), split, row))
                labels.append(shown)
                patients.append(None if patient is None else f"{source}\0{patient}")
    known = patients if any(p is not None for p in patients) else None
    leakage = audit(hash_values(hashes), labels, options.threshold, known)
    return AuditResult(leakage, unreadable, rows)


def write_audit(result: AuditResult, output: Path) -> list[Path]:
    """leakage_audit.json and the contact sheet in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / AUDIT_NAME
    content = result.report.to_json() | {"unreadable_images": result.unreadable}
    path.write_text(json.dumps(content, indent=2) + "\n")
    sheet = contact_sheet(result.report, result.rows, output / SHEET_NAME)
    return [path] + ([sheet] if sheet else [])


def format_result(result: AuditResult, written: list[Path]) -> str:
    lines = format_audit(result.report)
    if result.unreadable:
        lines.append(f"images that could not be decoded (not audited): {result.unreadable}")
    lines.append("wrote " + ", ".join(str(path) for path in written))
    return "\n".join(lines)
