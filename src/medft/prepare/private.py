"""The private record beside a prepared dataset: the paths that may name a patient.

Hospital exports name folders after patients, so the report, the dataset card and the
Hub know a dataset by its name only. The source path, the path options, and each
skipped file's path in the source (for DICOM, the path behind its hashed ``image_id``)
go to OUTPUT.private.json instead: beside the output folder like the DICOM salt, so
neither ``--push-to-hub`` nor an upload of the folder takes it, and readable by its
owner only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medft.prepare.listing import SourceListing

PRIVATE_SUFFIX = ".private.json"
KEPT_PRIVATELY = "(a path: in the private file beside the dataset)"  # its value in the report
ABOUT = (
    "Private: the paths behind a prepared dataset, which may name patients. Keep it beside "
    "the dataset folder; never push, upload or share it."
)


def private_file(output: Path) -> Path:
    """OUTPUT.private.json, beside the output folder, not in it."""
    return output.parent / f"{output.name}{PRIVATE_SUFFIX}"


def private_record(
    listing: SourceListing, output: Path, path_options: dict[str, str]
) -> dict[str, Any]:
    skipped = []
    for item in listing.skipped:
        source_path = listing.source_paths.get(item.file)
        entry = {"file": source_path or item.file, "reason": item.reason, "split": item.split}
        skipped.append(entry | ({"image_id": item.file} if source_path else {}))
    return {
        "about": ABOUT,
        "dataset": str(output),
        "source": listing.source,
        "options": path_options,
        "skipped": skipped,
    }


def write_private_record(
    listing: SourceListing, output: Path, path_options: dict[str, str]
) -> Path:
    """Write the record with mode 0600, also over an older one (``--overwrite``)."""
    path = private_file(output)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(descriptor, "w") as handle:
        json.dump(private_record(listing, output, path_options), handle, indent=2, default=str)
        handle.write("\n")
    return path
