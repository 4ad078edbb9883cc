"""`prepare_report.json` and the one-screen summary printed at the end of `medft prepare`.

The report is read back by `medft.formats.prepared_report`.

The report is pushed with the dataset, so it knows the dataset by its name and holds no
path that may name a patient; those are in the private record (`medft.prepare.private`).
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from medft.formats.prepared_report import REPORT_NAME, read_report
from medft.near_duplicates import parse_threshold
from medft.prepare.leakage import LeakageAudit, format_audit
from medft.prepare.listing import SourceListing
from medft.prepare.private import private_file
from medft.version import __version__

SKIPPED_SHOWN = 5


def class_counts(listing: SourceListing, dataset: DatasetDict) -> dict[str, dict[str, int]]:
    """Images per class per split; for multi-label, positives per finding plus empty rows."""
    column = listing.task.label_column
    return {
        split: listing.task.label_counts(part.data.column(column).to_pylist())
        for split, part in dataset.items()
    }


def build_report(
    listing: SourceListing,
    dataset: DatasetDict,
    stats: Counter[str],
    options: dict[str, Any],
    name: str,
    near_duplicates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "medft_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_type": listing.source_type,
        "task": listing.task.task,
        "options": options,
        "label_column": listing.task.label_column,
        "label_names": listing.task.label_names,
        "subgroup_columns": listing.subgroup_columns,
        "counts": {split: part.num_rows for split, part in dataset.items()},
        "class_counts": class_counts(listing, dataset),
        "image_modes": {key[5:]: n for key, n in sorted(stats.items()) if key.startswith("mode ")},
        "reencoded": stats["reencoded"],
        "metadata_stripped": stats["metadata_stripped"],
        "image_notes": {key[5:]: n for key, n in sorted(stats.items()) if key.startswith("note ")},
        "skipped_count": len(listing.skipped),
        "skipped": [vars(skipped) for skipped in listing.skipped],
        "ignored_count": sum(listing.ignored.values()),
        "ignored": dict(sorted(listing.ignored.items())),
        "notes": listing.notes,
        "near_duplicates": near_duplicates,
    } | ({"dicom": listing.dicom.to_dict()} if listing.dicom else {})


def write_report(report: dict[str, Any], folder: Path) -> Path:
    path = Path(folder) / REPORT_NAME
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def format_summary(report: dict[str, Any], output: str | Path) -> str:
    """Counts per split and class, what was skipped or ignored, and any notes; fits one screen."""
    splits = list(report["counts"])
    n_classes = len(report["label_names"])
    lines = [
        f"Prepared {report['source_type']} ({report['task']}, {n_classes} classes) -> {output}",
        "",
    ]
    width = max(len(name) for name in [*report["class_counts"][splits[0]], "class", "total"])
    header = "  ".join(f"{split:>10}" for split in splits)
    lines.append(f"{'class':<{width}}  {header}")
    for name in report["class_counts"][splits[0]]:
        row = "  ".join(f"{report['class_counts'][split][name]:>10}" for split in splits)
        lines.append(f"{name:<{width}}  {row}")
    total = "  ".join(f"{report['counts'][split]:>10}" for split in splits)
    lines += [f"{'total':<{width}}  {total}", ""]

    lines.append(f"skipped: {report['skipped_count']} unreadable or missing file(s)")
    reasons = Counter(item["reason"].split(":")[0] for item in report["skipped"])
    lines += [f"  {count:>6}  {reason}" for reason, count in reasons.most_common()]
    for item in report["skipped"][:SKIPPED_SHOWN]:
        lines.append(f"          e.g. {item['file']}: {item['reason']}")
    lines.append(f"ignored: {report['ignored_count']} file(s) that are not images")
    lines += [f"  {count:>6}  {reason}" for reason, count in report["ignored"].items()]
    for note, count in report.get("image_notes", {}).items():
        lines.append(f"images with {note}: {count}")
    if report.get("metadata_stripped"):
        lines.append(f"images stored without their metadata: {report['metadata_stripped']}")
    if report.get("subgroup_columns"):
        lines.append(f"subgroup columns: {', '.join(report['subgroup_columns'])}")
    for key, value in report["notes"].items():
        lines.append(f"{key.replace('_', ' ')}: {value}")
    lines += near_duplicate_lines(report.get("near_duplicates"), Path(output))
    lines.append(f"report: {Path(output) / REPORT_NAME}")
    lines.append(
        f"private: {private_file(Path(output))} (the source path, and the path of each skipped "
        "file; yours only: never push or share it)"
    )
    return "\n".join(lines)


def near_duplicate_lines(section: dict[str, Any] | None, output: Path) -> list[str]:
    """The leakage audit of the splits made, and of the splits without near-duplicate groups."""
    if not section:
        return []
    lines = format_audit(LeakageAudit(**section["after"]))
    without = LeakageAudit(**section["without_near_duplicate_groups"])
    copies = ", ".join(f"{split} {n}" for split, n in without.with_copy_in_train.items())
    sheet = section.get("contact_sheet")
    lines.append(
        f"  split without these groups: {without.groups_across_splits} across splits, near "
        f"copies in train: {copies or 'none'}; {section['images_moved']} images moved"
        + (f"; the largest groups: {output / sheet}" if sheet else "")
    )
    if section.get("warning"):
        lines.append(f"warning: {section['warning']}")
    return lines


def prepared_threshold(dataset_name: str) -> int | None:
    """The near-copy threshold a prepared dataset was split with (None: off, or a dataset
    medft did not prepare), so that cross-validation folds keep the same groups together."""
    folder = Path(dataset_name).expanduser()
    report = read_report(folder) if folder.is_dir() else None
    if not report:
        return None
    return parse_threshold(report.get("options", {}).get("near_duplicates"))
