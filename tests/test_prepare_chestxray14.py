import csv
import gzip
import shutil
from collections import Counter

import pytest
from datasets import ClassLabel, Image, List, load_from_disk

from medft.age_bands import age_band
from medft.config.prepare import ChestXray14Options
from medft.errors import MedftError
from medft.formats.prepared_report import read_report
from medft.prepare.chestxray14 import (
    FINDINGS,
    SUBGROUP_COLUMNS,
    list_chestxray14,
    official_splits,
    parse_age,
    read_name_list,
    read_table,
    row_columns,
)
from medft.prepare.report import format_summary
from medft.prepare.splits import groups_in_several_splits
from tests.conftest import SHARED_DATA

REAL_LABELS = SHARED_DATA / "nih-chestxray14-labels"
V2020_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def test_multilabel_contract(nih_prepared, nih_raw):
    dataset = load_from_disk(str(nih_prepared))
    assert list(dataset) == ["train", "validation", "test"]
    features = dataset["train"].features
    assert isinstance(features["image"], Image)
    assert isinstance(features["labels"], List)
    assert isinstance(features["labels"].feature, ClassLabel)
    assert features["labels"].feature.names == list(FINDINGS)
    assert FINDINGS[12] == "Pleural_Thickening"
    expected = {"image_id", "patient_id", "follow_up", "age", "sex", "view_position"}
    assert expected <= set(features)


def test_labels_match_the_table_and_no_finding_is_empty(nih_prepared, nih_raw):
    table = {e.image_id: e for e in read_table(nih_raw / "Data_Entry_2017.csv")}
    dataset = load_from_disk(str(nih_prepared))
    empty = 0
    for split in dataset:
        for image_id, labels in zip(dataset[split]["image_id"], dataset[split]["labels"]):
            assert tuple(labels) == table[image_id].findings
            empty += not labels
    assert empty > 0


def test_test_split_is_the_official_list_and_no_patient_is_shared(nih_prepared, nih_raw):
    dataset = load_from_disk(str(nih_prepared))
    assert sorted(dataset["test"]["image_id"]) == sorted(read_name_list(nih_raw / "test_list.txt"))
    patients = {split: dataset[split]["patient_id"] for split in dataset}
    assert groups_in_several_splits(patients) == set()
    assert len(dataset["validation"]) > 0


def test_rgba_files_and_impossible_ages(nih_prepared):
    report = read_report(nih_prepared)
    assert report["image_modes"].get("RGBA", 0) >= 1
    assert report["notes"]["ages_missing_or_impossible"] >= 1
    dataset = load_from_disk(str(nih_prepared))
    ages = [a for split in dataset for a in dataset[split]["age"]]
    assert None in ages and all(a is None or 0 <= a <= 120 for a in ages)


def test_age_parsing():
    assert parse_age("58") == 58 and parse_age("058Y") == 58
    assert parse_age("414") is None and parse_age("") is None


def test_ages_over_100_are_impossible_as_in_the_age_bands():
    assert parse_age("100") == 100 and parse_age("101") is None and parse_age("120") is None


def written_ages(table):
    """Image name -> the Patient Age the table writes, read here without medft's reader."""
    with open(table, newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows)
        name, age = header.index("Image Index"), header.index("Patient Age")
        return {row[name]: int(row[age]) for row in rows if row}


def test_sex_age_band_and_view_are_subgroup_columns(nih_prepared, nih_raw):
    report = read_report(nih_prepared)
    assert report["subgroup_columns"] == ["sex", "age_band", "view_position"]
    assert "subgroup columns: sex, age_band, view_position" in format_summary(report, "out")
    written = written_ages(nih_raw / "Data_Entry_2017.csv")
    over_100 = {name for name, age in written.items() if age > 100}
    assert over_100 and report["notes"]["ages_over_100_left_out"] == len(over_100)
    dataset = load_from_disk(str(nih_prepared))
    rows = [row for part in dataset.values() for row in part.remove_columns("image")]
    for row in rows:
        expected = None if row["image_id"] in over_100 else age_band(written[row["image_id"]])
        assert row["age_band"] == expected, row
        assert row["sex"] in ("M", "F") and row["view_position"] in ("PA", "AP")
    assert {row["age_band"] for row in rows} >= {None, "18-39", "40-59", "60-79"}


def test_view_filter(nih_raw, tmp_path):
    listing = list_chestxray14(ChestXray14Options(source=nih_raw, views="PA"))
    views = {e.metadata["view_position"] for ex in listing.splits.values() for e in ex}
    assert views == {"PA"}
    assert listing.notes["views"].startswith("PA only")
    with pytest.raises(MedftError, match="--views"):
        list_chestxray14(ChestXray14Options(source=nih_raw, views="LL"))


def copy_of(nih_raw, tmp_path):
    source = tmp_path / "nih"
    shutil.copytree(nih_raw, source)
    return source


def test_missing_image_is_reported_and_counted(nih_raw, tmp_path):
    source = copy_of(nih_raw, tmp_path)
    gone = next(source.glob("images_002/images/*.png"))
    gone.unlink()
    listing = list_chestxray14(ChestXray14Options(source=source))
    assert [s.file for s in listing.skipped] == [gone.name]
    assert "no image file found" in listing.skipped[0].reason


def test_unknown_label_stops_the_run_naming_image_and_label(nih_raw, tmp_path):
    source = copy_of(nih_raw, tmp_path)
    table = source / "Data_Entry_2017.csv"
    lines = table.read_text().splitlines()
    name = lines[3].split(",")[0]
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Pleural Thickening", 1)
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(MedftError, match=f"image {name} has the label 'Pleural Thickening'"):
        list_chestxray14(ChestXray14Options(source=source))


def test_bom_crlf_and_the_v2020_header_without_trailing_comma(tmp_path):
    rows = [
        V2020_HEADER,
        "00000001_000.png,Cardiomegaly|Emphysema,0,1,57,M,PA,2682,2749,0.143,0.143",
        "00000002_000.png,No Finding,0,2,80,M,AP,2500,2048,0.171,0.171",
    ]
    table = tmp_path / "Data_Entry_2017_v2020.csv"
    table.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    entries = read_table(table)
    assert [e.image_id for e in entries] == ["00000001_000.png", "00000002_000.png"]
    assert entries[0].findings == (FINDINGS.index("Cardiomegaly"), FINDINGS.index("Emphysema"))
    assert entries[1].findings == () and entries[1].view_position == "AP"


def test_a_utf16_table_and_split_list_read_as_their_utf8_copies(nih_raw, tmp_path):
    table = nih_raw / "Data_Entry_2017.csv"
    utf16 = tmp_path / "Data_Entry_2017.csv"
    utf16.write_bytes(table.read_text().encode("utf-16"))  # with a byte-order mark
    assert read_table(utf16) == read_table(table)
    names = tmp_path / "test_list.txt"
    names.write_bytes("00000001_000.png\r\n00000002_000.png\r\n".encode("utf-16"))
    assert read_name_list(names) == ["00000001_000.png", "00000002_000.png"]
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(table.read_bytes().replace(b"No Finding", b"No Finding \xe9", 1))
    with pytest.raises(
        MedftError, match="latin1.csv is not UTF-8 text: line [0-9]+ has the byte 0xe9"
    ):
        read_table(latin1)


def test_trailing_comma_rows_of_the_kaggle_table(nih_raw):
    first = (nih_raw / "Data_Entry_2017.csv").read_text().splitlines()[1]
    assert first.endswith(",")
    assert read_table(nih_raw / "Data_Entry_2017.csv")[0].sex in ("M", "F")


def test_a_table_without_the_needed_columns_is_named(tmp_path):
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text("name,finding\na.png,Mass\n")
    with pytest.raises(MedftError, match="lacks the column"):
        read_table(table)


def test_overlapping_split_lists_are_refused(nih_raw):
    entries = read_table(nih_raw / "Data_Entry_2017.csv")
    names = [e.image_id for e in entries]
    with pytest.raises(MedftError, match="appear in both"):
        official_splits(entries, names[:-1], names[-2:])


@pytest.mark.skipif(
    not REAL_LABELS.exists(), reason="the real NIH label table is not beside the repo"
)
def test_real_nih_table_reproduces_the_official_split():
    entries = read_table(REAL_LABELS / "Data_Entry_2017_v2020.csv.gz")
    assert len(entries) == 112_120
    splits, unlisted = official_splits(
        entries,
        read_name_list(REAL_LABELS / "train_val_list.txt"),
        read_name_list(REAL_LABELS / "test_list.txt"),
    )
    assert len(splits["train"]) + len(splits["validation"]) == 86_524
    assert len(splits["test"]) == 25_596
    assert unlisted == []
    patients = {split: [e.patient_id for e in part] for split, part in splits.items()}
    assert groups_in_several_splits(patients) == set()
    train_val_patients = len(set(patients["train"]) | set(patients["validation"]))
    assert len(set(patients["validation"])) == round(0.1 * train_val_patients)


@pytest.mark.skipif(
    not REAL_LABELS.exists(), reason="the real NIH label table is not beside the repo"
)
def test_real_nih_table_subgroup_columns_on_every_row():
    table = REAL_LABELS / "Data_Entry_2017_v2020.csv.gz"
    columns = [row_columns(entry) for entry in read_table(table)]
    assert len(columns) == 112_120
    with gzip.open(table, "rt", newline="") as handle:
        written = [int(row[4]) for row in list(csv.reader(handle))[1:]]
    assert [c["age_band"] for c in columns] == [age_band(age) for age in written]
    assert sum(age > 100 for age in written) == 0  # the v2020 table corrected the 2017 errors
    bands = Counter(c["age_band"] for c in columns)
    assert bands == {"0-17": 5_402, "18-39": 31_037, "40-59": 49_243, "60-79": 25_419, "80+": 1_019}
    assert Counter(c["sex"] for c in columns) == {"M": 63_340, "F": 48_780}
    assert Counter(c["view_position"] for c in columns) == {"PA": 67_310, "AP": 44_810}
    assert set(SUBGROUP_COLUMNS) <= set(columns[0])
