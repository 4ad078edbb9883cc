"""NIH ChestX-ray14 (Kaggle nih-chest-xrays/data, or NIH's own box download).

The label table is `Data_Entry_2017.csv` (Kaggle, a trailing comma on every
line and some impossible ages) or `Data_Entry_2017_v2020.csv` (NIH's revision).
Its bracketed headers contain commas, so columns are found by name, not by
position after the seventh. The test split is exactly `test_list.txt`;
validation is carved from `train_val_list.txt` by patient, so no patient is in
two splits. Sex, age band and view position are the subgroup columns.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from datasets import Value

from medft.age_bands import age_band, impossible_age
from medft.config.prepare import ChestXray14Options
from medft.errors import MedftError
from medft.prepare.files import open_text, require_file, require_folder
from medft.prepare.listing import Example, SourceListing
from medft.prepare.splits import carve_splits, groups_in_several_splits

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)  # fmt: skip
NO_FINDING = "No Finding"
TABLE_NAMES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv.gz",
)
COLUMNS = {
    "image_id": "Image Index",
    "findings": "Finding Labels",
    "follow_up": "Follow-up #",
    "patient_id": "Patient ID",
    "age": "Patient Age",
    "sex": "Patient Gender",
    "view_position": "View Position",
}
VIEWS = ("PA", "AP")
SUBGROUP_COLUMNS = ("sex", "age_band", "view_position")


class Entry(NamedTuple):
    """One row of the label table."""

    image_id: str
    findings: tuple[int, ...]
    follow_up: int
    patient_id: int
    age: int | None
    sex: str
    view_position: str
    age_impossible: bool = False  # the table's age is over 100 (the 2017 table has 148, 414)


def parse_findings(text: str, image_id: str, table: Path) -> tuple[int, ...]:
    if text.strip() == NO_FINDING:
        return ()
    indices = []
    for name in text.split("|"):
        name = name.strip()
        if name not in FINDINGS:
            raise MedftError(
                f"{table}: image {image_id} has the label '{name}', which is not one of the 14 "
                f"ChestX-ray14 findings ({', '.join(FINDINGS)}) or '{NO_FINDING}'. "
                "Fix that row of the table."
            )
        indices.append(FINDINGS.index(name))
    return tuple(sorted(set(indices)))


def written_age(text: str) -> int | None:
    """'58' or '058Y' -> 58, as the table writes it; None when it is not a number."""
    digits = text.strip().rstrip("YyMmDd")
    return int(digits) if digits.isdigit() else None


def parse_age(text: str) -> int | None:
    """'58' or '058Y' -> 58; an impossible age (over 100: `medft.age_bands`) -> None."""
    age = written_age(text)
    return None if impossible_age(age) else age


def read_table(table: str | Path) -> list[Entry]:
    """All rows of a ChestX-ray14 label table, in file order."""
    table = Path(table)
    with open_text(table) as handle:
        rows = csv.reader(handle)
        header = [name.strip() for name in next(rows, [])]
        missing = [name for name in COLUMNS.values() if name not in header]
        if missing:
            raise MedftError(
                f"{table} lacks the column(s) {', '.join(repr(m) for m in missing)}; "
                "is it the ChestX-ray14 Data_Entry_2017 table?"
            )
        at = {key: header.index(name) for key, name in COLUMNS.items()}
        entries = []
        for line, row in enumerate(rows, start=2):
            if not any(field.strip() for field in row):
                continue
            try:
                image_id = row[at["image_id"]].strip()
                entries.append(
                    Entry(
                        image_id=image_id,
                        findings=parse_findings(row[at["findings"]], image_id, table),
                        follow_up=int(row[at["follow_up"]]),
                        patient_id=int(row[at["patient_id"]]),
                        age=parse_age(row[at["age"]]),
                        sex=row[at["sex"]].strip(),
                        view_position=row[at["view_position"]].strip(),
                        age_impossible=impossible_age(written_age(row[at["age"]])),
                    )
                )
            except (IndexError, ValueError) as error:
                raise MedftError(f"{table}, line {line}: cannot read the row ({error}).") from None
    return entries


def row_columns(entry: Entry) -> dict[str, Any]:
    """The dataset's columns of one table row, besides its image and labels."""
    return {
        "image_id": entry.image_id,
        "patient_id": entry.patient_id,
        "follow_up": entry.follow_up,
        "age": entry.age,
        "age_band": age_band(entry.age),
        "sex": entry.sex,
        "view_position": entry.view_position,
    }


def read_name_list(path: str | Path) -> list[str]:
    """An official split list: one image name per line, no header."""
    with open_text(Path(path)) as handle:
        return [line.strip() for line in handle if line.strip()]


def official_splits(
    entries: Iterable[Entry],
    train_val_names: Iterable[str],
    test_names: Iterable[str],
    *,
    val_size: float = 0.1,
    seed: int = 42,
) -> tuple[dict[str, list[Entry]], list[Entry]]:
    """(train / validation / test entries, entries in neither list).

    Test is exactly the test list; validation takes ``val_size`` of the
    train_val patients. Raises if any patient ends up in two splits.
    """
    test_set, train_val_set = set(test_names), set(train_val_names)
    train_val, test, unlisted = [], [], []
    for entry in entries:
        if entry.image_id in test_set:
            test.append(entry)
        elif entry.image_id in train_val_set:
            train_val.append(entry)
        else:
            unlisted.append(entry)
    carved = carve_splits(
        len(train_val),
        {"validation": val_size},
        groups=[e.patient_id for e in train_val],
        seed=seed,
    )
    splits = {
        "train": [e for e, split in zip(train_val, carved) if split == "train"],
        "validation": [e for e, split in zip(train_val, carved) if split == "validation"],
        "test": test,
    }
    shared = groups_in_several_splits(
        {split: [e.patient_id for e in part] for split, part in splits.items()}
    )
    if shared:
        raise MedftError(
            f"{len(shared)} patient(s) appear in both train_val_list.txt and test_list.txt "
            f"(e.g. patient {min(shared)}); the official lists share none. Check the split files."
        )
    return splits, unlisted


def find_table(root: Path) -> Path:
    for name in TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    raise MedftError(
        f"{root} has no label table ({' or '.join(TABLE_NAMES[:2])}); "
        "point --source at the unzipped ChestX-ray14 download."
    )


def index_images(root: Path) -> dict[str, Path]:
    """Image name -> path, over images_001/images/*.png ... and a flat images/ folder."""
    found = {}
    for pattern in ("images_*/images/*.png", "images_*/*.png", "images/*.png"):
        for path in sorted(root.glob(pattern)):
            found.setdefault(path.name, path)
    return found


def list_chestxray14(options: ChestXray14Options) -> SourceListing:
    root = require_folder(options.source, "--source")
    views, val_size = options.views, options.val_size
    if views is not None and views not in VIEWS:
        raise MedftError(f"--views must be one of {', '.join(VIEWS)}, got '{views}'.")
    table = find_table(root)
    entries = read_table(table)
    train_val = read_name_list(require_file(root / "train_val_list.txt", "split list"))
    test = read_name_list(require_file(root / "test_list.txt", "split list"))
    splits, unlisted = official_splits(
        entries, train_val, test, val_size=val_size, seed=options.seed
    )

    images = index_images(root)
    if not images:
        raise MedftError(
            f"{root} holds no images under images_*/images/; "
            "point --source at the folder with images_001 ... images_012."
        )
    listing = SourceListing(
        source_type="chestxray14",
        source=str(root.resolve()),
        label_names=list(FINDINGS),
        multi_label=True,
        splits={},
        metadata_features={
            "image_id": Value("string"),
            "patient_id": Value("int32"),
            "follow_up": Value("int32"),
            "age": Value("int32"),
            "age_band": Value("string"),
            "sex": Value("string"),
            "view_position": Value("string"),
        },
        carve_sizes={"validation": val_size},
        carve_seed=options.seed,
        subgroup_columns=list(SUBGROUP_COLUMNS),
    )
    view_counts: Counter[str] = Counter()
    for split, part in splits.items():
        kept = []
        for entry in part:
            if views and entry.view_position != views:
                view_counts[entry.view_position] += 1
                continue
            path = images.get(entry.image_id)
            if path is None:
                listing.skip(
                    entry.image_id, f"listed in {table.name} but no image file found", split
                )
                continue
            given = "test" if split == "test" else None  # NIH's list; the rest carved by patient
            kept.append(
                Example(
                    path,
                    list(entry.findings),
                    row_columns(entry),
                    given_split=given,
                    group=entry.patient_id,
                )
            )
        listing.splits[split] = kept

    listed = {entry.image_id for entry in entries}
    not_in_table = sum(1 for name in images if name not in listed)
    if not_in_table:
        listing.ignored[f"image not in {table.name}"] = not_in_table
    listing.notes.update(
        {
            "label_table": table.name,
            "rows_in_neither_split_list": len(unlisted),
            "ages_missing_or_impossible": sum(1 for e in entries if e.age is None),
            "ages_over_100_left_out": sum(e.age_impossible for e in entries),
            "validation": f"{val_size:.0%} of train_val patients",
        }
    )
    if views:
        listing.notes["views"] = f"{views} only; left out {dict(view_counts)}"
    return listing
