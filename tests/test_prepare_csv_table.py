import shutil

import pytest
from datasets import load_from_disk
from PIL import Image

from medft.cli import main
from medft.config.prepare import CsvArguments, CsvOptions
from medft.errors import MedftError
from medft.formats.prepared_report import read_report
from medft.prepare import prepare_dataset
from medft.prepare.csv_table import list_csv
from medft.prepare.splits import groups_in_several_splits


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        Image.new("L", (12, 12), i * 5).save(folder / f"{i:02d}.png")
    return folder


def write_csv(path, header, rows, bom=False, crlf=False):
    end = "\r\n" if crlf else "\n"
    text = end.join([header, *rows]) + end
    path.write_bytes((("\ufeff" if bom else "") + text).encode())
    return path


def test_single_label_with_group_column(tmp_path, image_dir):
    rows = [f"{i:02d}.png,{'nodule' if i % 2 else 'clear'},p{i // 4}" for i in range(40)]
    csv_path = write_csv(tmp_path / "labels.csv", "path,finding,patient", rows, bom=True, crlf=True)
    output = tmp_path / "out"
    prepare_dataset(
        CsvArguments(
            output=output,
            csv_path=csv_path,
            image_root=image_dir,
            image_column="path",
            label_column="finding",
            group_column="patient",
            val_size=0.2,
            test_size=0.2,
            num_proc=1,
        )
    )
    dataset = load_from_disk(str(output))
    assert dataset["train"].features["label"].names == ["clear", "nodule"]
    patients = {split: dataset[split]["patient"] for split in dataset}
    assert groups_in_several_splits(patients) == set()
    assert sum(len(dataset[s]) for s in dataset) == 40


def test_multi_label_with_separator_and_negative_label(tmp_path, image_dir):
    labels = ["Mass|Nodule", "No Finding", "Effusion", "Mass"] * 10
    rows = [f"imgs/{i:02d}.png,{label}" for i, label in enumerate(labels)]
    csv_path = write_csv(tmp_path / "t.csv", "image,label", rows)
    listing = list_csv(
        CsvOptions(csv_path=csv_path, label_separator="|", negative_label="No Finding")
    )
    assert listing.task.multi_label and listing.task.label_names == ["Effusion", "Mass", "Nodule"]
    by_id = {e.metadata["image_id"]: e.label for ex in listing.splits.values() for e in ex}
    assert by_id["imgs/00.png"] == [1, 2] and by_id["imgs/01.png"] == []


def test_split_column_is_kept_and_missing_validation_carved(tmp_path, image_dir):
    rows = [
        f"{i:02d}.png,{'a' if i % 2 else 'b'},{'test' if i < 10 else 'Train'}" for i in range(40)
    ]
    csv_path = write_csv(tmp_path / "t.csv", "image,label,split", rows)
    listing = list_csv(
        CsvOptions(csv_path=csv_path, image_root=image_dir, split_column="split", val_size=0.2)
    )
    counts = {split: len(examples) for split, examples in listing.splits.items()}
    assert counts == {"train": 24, "validation": 6, "test": 10}


def test_missing_image_is_reported(tmp_path, image_dir):
    rows = ["00.png,a", "01.png,b", "gone.png,a", "02.png,b"]
    listing = list_csv(
        CsvOptions(
            csv_path=write_csv(tmp_path / "t.csv", "image,label", rows), image_root=image_dir
        )
    )
    assert [s.file for s in listing.skipped] == ["gone.png"]
    assert "not found" in listing.skipped[0].reason


def test_bad_columns_values_and_labels_are_named(tmp_path, image_dir):
    path = write_csv(tmp_path / "t.csv", "file,label", ["00.png,a"])
    with pytest.raises(MedftError, match="no column 'image'; its columns are 'file', 'label'"):
        list_csv(CsvOptions(csv_path=path, image_root=image_dir))
    path = write_csv(
        tmp_path / "s.csv", "image,label,split", ["00.png,a,train", "01.png,b,holdout"]
    )
    with pytest.raises(MedftError, match="line 3: split 'holdout'"):
        list_csv(CsvOptions(csv_path=path, image_root=image_dir, split_column="split"))
    path = write_csv(tmp_path / "e.csv", "image,label", ["00.png,a", "01.png,"])
    with pytest.raises(MedftError, match="line 3 .*empty label"):
        list_csv(CsvOptions(csv_path=path, image_root=image_dir))
    with pytest.raises(MedftError, match="does not exist"):
        list_csv(CsvOptions(csv_path=tmp_path / "none.csv"))


def listed(listing):
    return {
        split: [(e.path, e.label, e.metadata["image_id"]) for e in examples]
        for split, examples in listing.splits.items()
    }


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark_is_read_as_its_utf8_copy(tmp_path, image_dir, encoding):
    """Excel's "Unicode Text" and some PACS exports write UTF-16 with a byte-order mark."""
    lines = [
        "image,label",
        *(f"{i:02d}.png,{'épanchement' if i % 2 else 'normal'}" for i in range(20)),
    ]
    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes("\n".join(lines).encode() + b"\n")
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode(encoding))
    expected = listed(list_csv(CsvOptions(csv_path=utf8, image_root=image_dir)))
    assert listed(list_csv(CsvOptions(csv_path=utf16, image_root=image_dir))) == expected
    assert list_csv(CsvOptions(csv_path=utf16, image_root=image_dir)).task.label_names == [
        "normal",
        "épanchement",
    ]


def test_a_csv_that_is_not_utf8_is_refused_naming_the_line_and_the_byte(tmp_path, image_dir):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("image,label\n00.png,normal\n01.png,épanchement\n".encode("latin-1"))
    with pytest.raises(MedftError) as error:
        list_csv(CsvOptions(csv_path=latin1, image_root=image_dir))
    assert str(error.value) == (
        f"{latin1} is not UTF-8 text: line 3 has the byte 0xe9 after '01.png,'; save it as "
        "UTF-8 (in Excel: Save As, CSV UTF-8)."
    )
    cut_short = tmp_path / "utf16_cut.csv"  # a UTF-16 file one byte short
    cut_short.write_bytes("\ufeffimage,label\n00.png,normal\n".encode("utf-16-le")[:-1])
    with pytest.raises(MedftError, match="utf16_cut.csv is not UTF-16 text: line 2 has the byte"):
        list_csv(CsvOptions(csv_path=cut_short, image_root=image_dir))
    no_byte_order_mark = tmp_path / "utf16_no_bom.csv"
    no_byte_order_mark.write_bytes("image,label\n00.png,normal\n".encode("utf-16-le"))
    with pytest.raises(MedftError, match="NUL bytes.*UTF-16 without a byte-order mark"):
        list_csv(CsvOptions(csv_path=no_byte_order_mark, image_root=image_dir))


def splits_of(listing) -> dict[str, set[str]]:
    """file -> the splits its rows landed in."""
    found: dict[str, set[str]] = {}
    for split, examples in listing.splits.items():
        for example in examples:
            found.setdefault(example.path.resolve().name, set()).add(split)
    return found


def test_a_file_listed_13_times_lands_in_one_split(tmp_path, image_dir):
    spellings = ["00.png", "./00.png", str(image_dir / "00.png"), "sub/../00.png"]
    rows = [f"{spellings[i % 4]},a" for i in range(13)]
    rows += [f"{i:02d}.png,{'a' if i % 2 else 'b'}" for i in range(1, 40)]
    (image_dir / "sub").mkdir()
    listing = list_csv(
        CsvOptions(
            csv_path=write_csv(tmp_path / "t.csv", "image,label", rows), image_root=image_dir
        )
    )
    assert len(splits_of(listing)["00.png"]) == 1
    assert sum(len(examples) for examples in listing.splits.values()) == 52  # every row kept
    assert listing.notes["rows_repeating_a_file"] == 12


def test_byte_identical_copies_under_other_names_land_in_one_split(tmp_path, image_dir):
    for i in range(10):
        shutil.copy(image_dir / f"{i:02d}.png", image_dir / f"copy_{i:02d}.png")
    rows = [f"{i:02d}.png,{'a' if i % 2 else 'b'}" for i in range(40)]
    rows += [f"copy_{i:02d}.png,{'a' if i % 2 or i < 3 else 'b'}" for i in range(10)]
    listing = list_csv(
        CsvOptions(
            csv_path=write_csv(tmp_path / "t.csv", "image,label", rows), image_root=image_dir
        )
    )
    found = splits_of(listing)
    assert all(found[f"{i:02d}.png"] == found[f"copy_{i:02d}.png"] for i in range(10))
    assert listing.notes["byte_identical_groups"] == 10
    assert listing.notes["byte_identical_groups_across_classes"] == 2  # copies 00 and 02
    assert listing.notes["rows_repeating_a_file"] == 0


def test_a_file_under_two_patient_ids_brings_both_patients_into_one_split(tmp_path, image_dir):
    rows = [f"{i:02d}.png,{'a' if i % 2 else 'b'},p{i // 2}" for i in range(40)]
    rows += [f"{4 * k:02d}.png,b,p{2 * k + 1}" for k in range(10)]  # p0 and p1, p2 and p3, ...
    path = write_csv(tmp_path / "t.csv", "image,label,patient", rows)
    listing = list_csv(CsvOptions(csv_path=path, image_root=image_dir, group_column="patient"))
    patients: dict[str, set[str]] = {}
    for split, examples in listing.splits.items():
        for example in examples:
            patients.setdefault(example.metadata["patient"], set()).add(split)
    assert all(patients[f"p{2 * k}"] == patients[f"p{2 * k + 1}"] for k in range(10))
    assert all(len(splits) == 1 for splits in patients.values())
    assert listing.notes["patient_groups_joined_by_shared_files"] == 10
    assert listing.notes["patient_values_in_two_splits"] == 0


def test_a_file_listed_with_two_labels_keeps_both_rows_in_one_split_and_is_counted(
    tmp_path, image_dir
):
    rows = [f"{i:02d}.png,{'a' if i % 2 else 'b'}" for i in range(40)]
    rows += [f"{i:02d}.png,{'b' if i % 2 else 'a'}" for i in range(0, 40, 3)]  # the other label
    listing = list_csv(
        CsvOptions(
            csv_path=write_csv(tmp_path / "t.csv", "image,label", rows), image_root=image_dir
        )
    )
    labels: dict[str, set[int]] = {}
    for examples in listing.splits.values():
        for example in examples:
            labels.setdefault(example.path.name, set()).add(example.label)
    assert all(len(splits_of(listing)[f"{i:02d}.png"]) == 1 for i in range(0, 40, 3))
    assert all(labels[f"{i:02d}.png"] == {0, 1} for i in range(0, 40, 3))
    assert listing.notes["repeated_files_with_conflicting_labels"] == 14
    assert listing.notes["rows_repeating_a_file"] == 14


def test_a_file_given_two_splits_by_the_split_column_is_counted(tmp_path, image_dir):
    rows = [f"{i:02d}.png,{'a' if i % 2 else 'b'},train" for i in range(40)]
    rows += ["00.png,b,test", "01.png,a,test"]
    path = write_csv(tmp_path / "t.csv", "image,label,split", rows)
    listing = list_csv(CsvOptions(csv_path=path, image_root=image_dir, split_column="split"))
    assert splits_of(listing)["00.png"] == {"train", "test"}  # the split column decides
    assert listing.notes["same_or_identical_files_in_two_splits"] == 2


def subgroup_table(tmp_path):
    rows = [
        f"{i:02d}.png,{'a' if i % 2 else 'b'},{'FM'[i % 2]},{('site 1', 'site 2', '')[i % 3]},p{i}"
        for i in range(40)
    ]
    return write_csv(tmp_path / "t.csv", "image,label,sex,site,patient", rows)


def test_subgroup_columns_are_kept_as_text_and_declared(tmp_path, image_dir, capsys):
    table = subgroup_table(tmp_path)
    output = tmp_path / "out"
    argv = ["prepare", "csv", "--csv", str(table), "--image-root", str(image_dir), "--output",
            str(output), "--num-proc", "1", "--metadata-columns", "patient"]  # fmt: skip
    assert main([*argv, "--subgroup-columns", "sex,site"]) == 0
    report = read_report(output)
    assert report["subgroup_columns"] == ["sex", "site"]
    assert report["options"]["subgroup_columns"] == ["sex", "site"]
    dataset = load_from_disk(str(output))
    assert {"sex", "site", "patient"} <= set(dataset["train"].column_names)
    assert dataset["train"].features["site"].dtype == "string"
    rows = {row["image_id"]: row for part in dataset.values() for row in part}
    assert rows["00.png"]["sex"] == "F" and rows["01.png"]["site"] == "site 2"
    assert rows["02.png"]["site"] is None  # an empty cell is a missing value, not a group ""
    for given in (["sex", "--subgroup-columns", "site"], ["sex", "site"], ["sex,site", "sex"]):
        assert main([*argv, "--overwrite", "--subgroup-columns", *given]) == 0
        assert read_report(output)["subgroup_columns"] == ["sex", "site"]


def test_a_subgroup_column_that_is_not_in_the_csv_or_is_medfts_is_named(tmp_path, image_dir):
    table = subgroup_table(tmp_path)
    with pytest.raises(MedftError) as error:
        list_csv(CsvOptions(csv_path=table, image_root=image_dir, subgroup_columns=["sex", "age"]))
    assert str(error.value).startswith(
        f"{table} has no column 'age'; its columns are 'image', 'label', 'sex', 'site', 'patient'."
    )
    for column in ("label", "image_id"):
        with pytest.raises(MedftError, match=f"--subgroup-columns '{column}' clashes with a col"):
            list_csv(CsvOptions(csv_path=table, image_root=image_dir, subgroup_columns=[column]))
    hashes = ["00.png,a,x", "01.png,b,y"]  # a column the writer would fill with its own hashes
    hashed = write_csv(tmp_path / "h.csv", "image,label,perceptual_hash", hashes)
    with pytest.raises(MedftError, match="--metadata-columns 'perceptual_hash' clashes with"):
        list_csv(
            CsvOptions(csv_path=hashed, image_root=image_dir, metadata_columns=["perceptual_hash"])
        )

    assert list_csv(CsvOptions(csv_path=table, image_root=image_dir)).subgroup_columns == []
