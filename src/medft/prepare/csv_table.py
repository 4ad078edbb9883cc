"""A CSV of image paths and labels: single- or multi-label, optional split and group columns.

Paths are relative to ``image_root`` (default: the CSV's folder) unless absolute.
With a split column its values (train / val / validation / test, any case) are
kept; missing splits are carved from train. Rows naming one file (``a.png``,
``./a.png``, its absolute path) and rows naming byte-identical files stay in one
carved split, as the folder source keeps copies; with a group column (for example a
patient id) every group does too, and groups sharing a file are joined. Metadata and
subgroup columns (attributes such as sex or site to compare results by) are kept as text.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from datasets import Value

from medft.config.prepare import CsvOptions, LabelTableColumns
from medft.errors import MedftError
from medft.near_duplicates import HASH_COLUMN
from medft.prepare.files import content_hashes, open_text, require_file
from medft.prepare.listing import Example, SourceListing
from medft.prepare.splits import (
    SPLITS,
    assign_splits,
    canonical_split,
    groups_in_several_splits,
    joined_groups,
)

RESERVED_COLUMNS = ("image", "label", "labels", "image_id", HASH_COLUMN)


def read_rows(csv_path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open_text(csv_path) as handle:
        reader = csv.DictReader(handle)
        header = [name for name in reader.fieldnames or [] if name]
        missing = [name for name in required if name not in header]
        if missing:
            raise MedftError(
                f"{csv_path} has no column {missing[0]!r}; its columns are "
                f"{', '.join(repr(h) for h in header)}. "
                "Name the right one with the matching option."
            )
        return [row for row in reader if any((value or "").strip() for value in row.values())]


def parse_labels(
    value: str, separator: str | None, negative_label: str | None, where: str
) -> list[str]:
    names = [name.strip() for name in value.split(separator)] if separator else [value.strip()]
    names = [name for name in names if name and name != negative_label]
    if not names and not separator:
        raise MedftError(f"{where} has an empty label; fill it in or remove the row.")
    return names


@dataclass
class LabelTable:
    """A CSV's rows, each with its label(s) as class indices and the split it was given."""

    csv_path: Path
    image_root: Path
    image_column: str
    rows: list[dict[str, str]]
    label_names: list[str]
    labels: list[int | list[int]]  # a class index, or sorted indices (multi-label)
    multi_label: bool
    given_splits: list[str | None]

    def image_of(self, row: dict[str, str]) -> tuple[str, Path]:
        """(the path as the CSV writes it, the file it names)."""
        written = row[self.image_column].strip()
        path = Path(written).expanduser()
        return written, path if path.is_absolute() else self.image_root / path

    def image_ids(self) -> list[str]:
        """Each row's image id: its path as the CSV writes it, or, for an absolute path, its
        path below the image root (else below the folder all absolute paths share), so that no
        absolute path reaches the dataset."""
        written = [self.image_of(row) for row in self.rows]
        absolute = [path for text, path in written if Path(text).expanduser().is_absolute()]
        if not absolute:
            return [text for text, _ in written]
        shared = Path(os.path.commonpath([path.parent for path in absolute]))
        ids = []
        for text, path in written:
            if not Path(text).expanduser().is_absolute():
                ids.append(text)
            elif path.is_relative_to(self.image_root.expanduser()):
                ids.append(path.relative_to(self.image_root.expanduser()).as_posix())
            else:
                ids.append(path.relative_to(shared).as_posix())
        return ids


def read_label_table(
    csv_path: str | Path, columns: LabelTableColumns, other_columns: Sequence[str] = ()
) -> LabelTable:
    """Read a CSV of image paths and labels as ``columns`` say; a missing column, an empty
    label, a bad split value or a single class stops with a message naming the line or
    column."""
    csv_path = require_file(csv_path, "--csv")
    image_root = Path(columns.image_root).expanduser() if columns.image_root else csv_path.parent
    image_column, label_column = columns.image_column, columns.label_column
    split_column, label_separator = columns.split_column, columns.label_separator
    required = [image_column, label_column, *([split_column] if split_column else [])]
    rows = read_rows(csv_path, [*required, *other_columns])
    multi_label = label_separator is not None

    row_labels = []
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}, line {line} ({row[image_column]})"
        row_labels.append(
            parse_labels(row[label_column], label_separator, columns.negative_label, where)
        )
    label_names = sorted({name for names in row_labels for name in names})
    index_of = {name: index for index, name in enumerate(label_names)}
    if len(label_names) < 2 and not multi_label:
        raise MedftError(f"{csv_path}: column {label_column!r} has fewer than two classes.")

    given = []
    for line, row in enumerate(rows, start=2):
        value = row[split_column].strip() if split_column else ""
        split = canonical_split(value) if value else None
        if value and split is None:
            raise MedftError(
                f"{csv_path}, line {line}: split {value!r} in column {split_column!r} is not "
                "one of train / val / validation / test."
            )
        given.append(split)
    labels: list[int | list[int]] = [
        sorted(index_of[name] for name in names) if multi_label else index_of[names[0]]
        for names in row_labels
    ]
    return LabelTable(
        csv_path, image_root, image_column, rows, label_names, labels, multi_label, given
    )


def row_files(table: LabelTable) -> list[Path | None]:
    """The file each row names, resolved, so ``a.png``, ``./a.png`` and its absolute path are
    one file; None where there is no such file."""
    paths = [path for _, path in map(table.image_of, table.rows)]
    return [path.resolve() if path.is_file() else None for path in paths]


def same_file_groups(files: list[Path | None]) -> list[int]:
    """A split group per row: rows naming one file, or byte-identical files, share one (as the
    folder source keeps copies together)."""
    distinct = list(dict.fromkeys(file for file in files if file))
    digest_of = dict(zip(distinct, content_hashes(distinct)))
    return joined_groups(files, [digest_of.get(file) for file in files])


def repeated_file_notes(
    files: list[Path | None], same_file: list[int], labels: list[int | list[int]]
) -> dict[str, int]:
    """The report's counts of rows naming a file listed before, of files listed with two
    labels, and of groups of byte-identical files (and of those across classes)."""
    files_in: dict[int, set[Path]] = {}
    labels_in: dict[int, set] = {}
    labels_of: dict[Path, set] = {}
    for file, group, label in zip(files, same_file, labels):
        if file is not None:
            label = tuple(label) if isinstance(label, list) else label
            files_in.setdefault(group, set()).add(file)
            labels_in.setdefault(group, set()).add(label)
            labels_of.setdefault(file, set()).add(label)
    copies = [group for group, found in files_in.items() if len(found) > 1]
    return {
        "rows_repeating_a_file": sum(1 for file in files if file) - len(labels_of),
        "repeated_files_with_conflicting_labels": sum(1 for s in labels_of.values() if len(s) > 1),
        "byte_identical_groups": len(copies),
        "byte_identical_groups_across_classes": sum(1 for g in copies if len(labels_in[g]) > 1),
    }


def kept_columns(
    group_column: str | None, metadata_columns: Sequence[str], subgroup_columns: Sequence[str]
) -> list[str]:
    """The CSV columns the dataset keeps, once each; a name medft writes itself is refused."""
    asked = {
        "--group-column": [group_column] if group_column else [],
        "--metadata-columns": metadata_columns,
        "--subgroup-columns": subgroup_columns,
    }
    for option, columns in asked.items():
        for column in columns:
            if column in RESERVED_COLUMNS:
                raise MedftError(
                    f"{option} {column!r} clashes with a column medft writes "
                    f"({', '.join(RESERVED_COLUMNS)}); rename that column in the CSV."
                )
    return list(dict.fromkeys(column for columns in asked.values() for column in columns))


def subgroup_value(text: str | None) -> str | None:
    """A subgroup column's value; an empty cell is a missing value, not a group named ''."""
    return (text or "").strip() or None


def split_apart(groups: Sequence[Hashable], assigned: Sequence[str]) -> int:
    """How many groups have items in more than one split."""
    by_split = {split: [g for g, s in zip(groups, assigned) if s == split] for split in SPLITS}
    return len(groups_in_several_splits(by_split))


def list_csv(options: CsvOptions) -> SourceListing:
    group_column, subgroup_columns = options.group_column, options.subgroup_columns
    kept = kept_columns(group_column, options.metadata_columns, subgroup_columns)
    table = read_label_table(options.csv_path, options, other_columns=kept)
    groups = [row[group_column] for row in table.rows] if group_column else None
    files = row_files(table)
    same_file = same_file_groups(files)
    units = joined_groups(same_file, groups) if groups else same_file
    listing = SourceListing(
        source_type="csv",
        source=str(table.csv_path.resolve()),
        label_names=table.label_names,
        multi_label=table.multi_label,
        splits={},
        metadata_features={"image_id": Value("string")}
        | {column: Value("string") for column in kept},
        subgroup_columns=list(dict.fromkeys(subgroup_columns)),
    )
    strata = listing.task.split_strata(table.labels)
    assigned = assign_splits(
        table.given_splits, options.sizes, labels=strata, groups=units, seed=options.seed
    )
    listing.carve_sizes, listing.carve_seed = options.sizes, options.seed
    rows = zip(
        table.rows,
        table.labels,
        strata or repeat(None),
        assigned,
        table.given_splits,
        table.image_ids(),
        units,
    )
    for row, label, stratum, split, given, image_id, unit in rows:
        _, path = table.image_of(row)
        if not path.is_file():
            listing.skip(image_id, f"listed in {table.csv_path.name} but not found", split)
            continue
        metadata = {"image_id": image_id} | {column: row[column] for column in kept}
        metadata |= {column: subgroup_value(row[column]) for column in subgroup_columns}
        example = Example(path, label, metadata, given_split=given, stratum=stratum, group=unit)
        listing.splits[split].append(example)

    listing.notes |= repeated_file_notes(files, same_file, table.labels)
    if options.split_column:  # the column's splits are kept, even where they part a file's rows
        listing.notes["same_or_identical_files_in_two_splits"] = split_apart(same_file, assigned)
    if group_column:
        joining: dict[int, set[str]] = {}
        for unit, value in zip(units, groups):
            joining.setdefault(unit, set()).add(value)
        joined = sum(1 for values in joining.values() if len(values) > 1)
        listing.notes[f"{group_column}_groups_joined_by_shared_files"] = joined
        listing.notes[f"{group_column}_values_in_two_splits"] = split_apart(groups, assigned)
    listing.notes["csv_rows"] = len(table.rows)
    return listing
