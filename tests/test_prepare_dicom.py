"""medft prepare dicom: layouts built from pydicom's shipped files and copies with edited tags."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pydicom
import pytest
from datasets import load_from_disk
from pydicom.pixels import apply_modality_lut, pixel_array

from medft.cli import main
from medft.config.prepare import DicomArguments, DicomOptions
from medft.errors import MedftError
from medft.formats.windowing import OFFSET_16BIT
from medft.prepare import prepare_dataset
from medft.prepare.dicom import list_dicom
from medft.prepare.dicom_privacy import Pseudonyms, age_in_years, salt_file
from medft.prepare.hub import dataset_card
from medft.prepare.private import private_file
from tests.dicom_files import (
    assert_close_to,
    dicom_copy,
    expected_grey,
    pydicom_file,
    without_meta,
)

JUNK = {  # file in the mr class -> the start of its skip reason
    "mr/rtplan.dcm": "holds no image: RT Plan Storage",
    "mr/test-SR.dcm": "holds no image: Comprehensive SR Storage",
    "mr/waveform_ecg.dcm": "holds no image: 12-lead ECG Waveform Storage",
    "mr/DICOMDIR": "holds no image: Media Storage Directory Storage",
    "mr/MR_truncated.dcm": "corrupt, truncated or undecodable pixel data",
    "mr/no_meta.dcm": "no DICOM file meta header",
    "mr/bare.dcm": "no DICOM file meta header",
    "mr/video.dcm": "cannot decode transfer syntax: MPEG-4 AVC/H.264",
}
COLUMNS = {
    "image", "label", "image_id", "frame", "patient_id", "study_id", "modality", "view_position",
    "body_part", "rows", "columns", "bits_stored", "photometric_interpretation",
    "manufacturer_model", "perceptual_hash",
}  # fmt: skip


def build_layout(root):
    """Two classes: CT (8 files of 4 patients, one without extension, one without any ID) and
    MR (every compression of MR_small, MONOCHROME1, colour and multi-frame files, and junk)."""
    for i in range(8):
        dicom_copy("CT_small.dcm", root / "ct" / f"ct_{i}.dcm", PatientID=f"CT-{i // 2}")
    dicom_copy("CT_small.dcm", root / "ct" / "IM0009", PatientID="CT-9")  # preamble, no .dcm
    dicom_copy("CT_small.dcm", root / "ct" / "anonymous.dcm", PatientID="", StudyInstanceUID="1.2")
    dicom_copy(
        "CT_small.dcm", root / "ct" / "same_study.dcm", PatientID=None, StudyInstanceUID="1.2"
    )
    (root / "ct" / "notes.txt").write_text("not DICOM")
    (root / "ct" / ".DS_Store").write_bytes(b"\0")
    compressions = [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
    ]
    for i, name in enumerate(compressions):
        dicom_copy(name, root / "mr" / name, PatientID=f"MR-{i}")
    mono1 = {"PhotometricInterpretation": "MONOCHROME1", "PatientID": "MR-8"}
    dicom_copy("MR_small.dcm", root / "mr" / "mono1.dcm", **mono1)
    dicom_copy("SC_rgb_rle_2frame.dcm", root / "mr" / "rgb_2frame.dcm", PatientID="MR-9")
    dicom_copy("SC_ybr_full_422_uncompressed.dcm", root / "mr" / "ybr.dcm", PatientID="MR-10")
    for junk in (
        "rtplan.dcm",
        "test-SR.dcm",
        "waveform_ecg.dcm",
        "MR_truncated.dcm",
        "no_meta.dcm",
    ):
        shutil.copy(pydicom_file(junk), root / "mr" / junk)
    shutil.copy(pydicom_file("DICOMDIR"), root / "mr" / "DICOMDIR")
    without_meta("MR_small.dcm", root / "mr" / "bare.dcm")
    video = pydicom.dcmread(dicom_copy("MR_small_RLE.dcm", root / "mr" / "video.dcm"))
    video.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4: nothing decodes it
    video.save_as(root / "mr" / "video.dcm")
    return root


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return build_layout(tmp_path_factory.mktemp("dicom_raw"))


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    output = tmp_path_factory.mktemp("dicom_prepared") / "data"
    report = prepare_dataset(DicomArguments(output=output, source=raw, frames="all", num_proc=1))
    return output, report


def pseudonyms_of(output) -> Pseudonyms:
    return Pseudonyms(salt_file(output).read_text().strip().encode())


def rows_of(output, key: str) -> list[dict]:
    """The rows of the file at ``key`` (its path in the source), in every split."""
    image_id = pseudonyms_of(output)("file", key)
    dataset = load_from_disk(str(output))
    return [
        row | {"split": split}
        for split, part in dataset.items()
        for row in part
        if row["image_id"] == image_id
    ]


def test_dataset_contract_and_technical_columns_only(prepared):
    output, report = prepared
    dataset = load_from_disk(str(output))
    assert list(dataset) == ["train", "validation", "test"]
    assert set(dataset["train"].column_names) == COLUMNS
    assert dataset["train"].features["label"].names == ["ct", "mr"]
    assert report["source_type"] == "dicom" and report["dicom"]["bit_depth"] == 8
    row = rows_of(output, "ct/ct_0.dcm")[0]
    assert row["modality"] == "CT" and row["rows"] == 128 and row["bits_stored"] == 16
    assert row["photometric_interpretation"] == "MONOCHROME2"
    assert row["image"].mode == "L" and row["frame"] == 0


def test_pixels_match_pydicoms_own_functions(prepared, raw):
    output, _ = prepared
    for key in ("ct/ct_0.dcm", "mr/MR_small.dcm", "mr/MR_small_jp2klossless.dcm", "mr/mono1.dcm"):
        (row,) = rows_of(output, key)
        assert_close_to(row["image"], expected_grey(raw / key))
    (ybr,) = rows_of(output, "mr/ybr.dcm")
    assert ybr["image"].mode == "RGB"
    assert np.array_equal(np.asarray(ybr["image"]), pixel_array(raw / "mr" / "ybr.dcm"))


def test_every_frame_is_a_row_and_a_files_frames_share_a_split(prepared, raw):
    output, _ = prepared
    rows = rows_of(output, "mr/rgb_2frame.dcm")
    assert sorted(row["frame"] for row in rows) == [0, 1]
    assert len({row["split"] for row in rows}) == 1
    frames = pixel_array(raw / "mr" / "rgb_2frame.dcm")
    for row in rows:
        assert np.array_equal(np.asarray(row["image"]), frames[row["frame"]])


def test_files_holding_no_image_or_broken_are_skipped_with_the_reason(prepared):
    output, report = prepared
    pseudonym = pseudonyms_of(output)
    reasons = {item["file"]: item["reason"] for item in report["skipped"]}
    for key, reason in JUNK.items():
        assert reasons[pseudonym("file", key)].startswith(reason), key
    assert report["skipped_count"] == len(JUNK)
    assert report["ignored"] == {
        "not DICOM (no .dcm extension, no 'DICM' preamble) (.txt)": 1,
        "system file (.DS_Store)": 1,
    }
    (found,) = rows_of(output, "ct/IM0009")  # DICOM by its preamble
    assert found["modality"] == "CT"


def test_split_is_by_patient_then_study(prepared):
    output, report = prepared
    for patient in range(4):
        keys = [f"ct/ct_{2 * patient}.dcm", f"ct/ct_{2 * patient + 1}.dcm"]
        splits = {row["split"] for key in keys for row in rows_of(output, key)}
        assert len(splits) == 1
    (anonymous,), (same_study,) = (
        rows_of(output, "ct/anonymous.dcm"),
        rows_of(output, "ct/same_study.dcm"),
    )
    assert anonymous["split"] == same_study["split"]
    study = pseudonyms_of(output)("study", "1.2")
    assert anonymous["study_id"] == same_study["study_id"] == study
    assert anonymous["patient_id"] == same_study["patient_id"] == study  # the group's pseudonym
    notes = report["notes"]
    assert notes["files_without_patient_id_grouped_by_study"] == 2
    assert notes["patients_in_two_splits"] == 0
    assert notes["patients"] == 14  # 13 given, and MR_small's own, kept by two broken copies


def test_window_preset_sixteen_bits_middle_frame_force_and_age(raw, tmp_path):
    source = tmp_path / "raw"
    dicom_copy("CT_small.dcm", source / "a" / "ct.dcm", PatientAge="093Y")
    dicom_copy("examples_ybr_color.dcm", source / "a" / "cine.dcm")  # 30 frames
    without_meta("MR_small.dcm", source / "b" / "IM0001")  # no extension, no meta header
    without_meta("MR_small.dcm", source / "b" / "1.2.826.0.1.77")  # named by a UID
    dicom_copy("CT_small.dcm", source / "b" / "ct.dcm", PatientID="other", PatientAge="045Y")
    options = {"source": source, "num_proc": 1, "frames": "middle", "force": True, "age": True}

    lung = tmp_path / "lung"
    prepare_dataset(DicomArguments(output=lung, window="lung", **options))
    (ct,) = rows_of(lung, "a/ct.dcm")
    assert_close_to(
        ct["image"], expected_grey(source / "a" / "ct.dcm", WindowCenter=-600, WindowWidth=1500)
    )
    assert ct["age"] == 90 and rows_of(lung, "b/ct.dcm")[0]["age"] == 45
    (cine,) = rows_of(lung, "a/cine.dcm")
    assert cine["frame"] == 15
    (bare,) = rows_of(lung, "b/IM0001")  # read with --force
    assert len(rows_of(lung, "b/1.2.826.0.1.77")) == 1
    assert_close_to(
        bare["image"],
        expected_grey(pydicom_file("MR_small.dcm"), WindowCenter=-600, WindowWidth=1500),
    )

    deep = tmp_path / "deep"
    report = prepare_dataset(DicomArguments(output=deep, window="lung", bit_depth=16, **options))
    (ct16,) = rows_of(deep, "a/ct.dcm")
    ds = pydicom.dcmread(source / "a" / "ct.dcm")
    assert ct16["image"].mode == "I;16"
    expected = np.rint(apply_modality_lut(ds.pixel_array, ds)) + OFFSET_16BIT
    assert np.array_equal(np.asarray(ct16["image"]), expected)
    lung_window = {"center": -600.0, "width": 1500.0}
    assert report["dicom"] == {
        "window": lung_window,
        "bit_depth": 16,
        "frames": "middle",
        "force": True,
    }
    assert age_in_years("006M") == 0 and age_in_years("bad") is None
    small = tmp_path / "small"
    prepare_dataset(DicomArguments(output=small, bit_depth=16, image_size=64, **options))
    (resized,) = rows_of(small, "a/ct.dcm")
    assert resized["image"].mode == "I;16" and resized["image"].size == (64, 64)


def test_csv_of_paths_and_labels(raw, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text(
        "path,finding\n"
        + "".join(f"ct/ct_{i}.dcm,nodule|emphysema\n" for i in range(4))
        + "".join(f"ct/ct_{i}.dcm,No Finding\n" for i in range(4, 8))
        + "mr/MR_small.dcm,nodule\nmr/missing.dcm,nodule\n"
    )
    output = tmp_path / "out"
    report = prepare_dataset(
        DicomArguments(
            output=output,
            csv_path=table,
            image_root=raw,
            image_column="path",
            label_column="finding",
            label_separator="|",
            negative_label="No Finding",
            num_proc=1,
        )
    )
    assert report["task"] == "multilabel" and report["label_names"] == ["emphysema", "nodule"]
    (missing,) = report["skipped"]
    assert missing == {
        "file": pseudonyms_of(output)("file", "mr/missing.dcm"),
        "reason": "listed in the CSV but not found",
        "split": None,
    }
    (row,) = rows_of(output, "ct/ct_0.dcm")
    assert row["labels"] == [0, 1]


def test_a_csv_naming_a_file_twice_keeps_its_rows_in_one_split(tmp_path):
    """Files with a patient or study ID share their header's group however they are written;
    files with neither are grouped by the file, not by how the CSV spells its path."""
    root = tmp_path / "raw"
    for i in range(20):
        dicom_copy("CT_small.dcm", root / f"ct_{i}.dcm", PatientID=None, StudyInstanceUID=None)
    dicom_copy("CT_small.dcm", root / "patient.dcm", PatientID="P-1")
    rows = [
        f"{spelling}ct_{i}.dcm,{'a' if i % 2 else 'b'}\n"
        for i in range(20)
        for spelling in ("", "./")
    ]
    table = tmp_path / "labels.csv"
    table.write_text("image,label\n" + "".join(rows) + "patient.dcm,a\n./patient.dcm,a\n")
    listing = list_dicom(
        DicomOptions(csv_path=table, image_root=root, id_salt="a salt for this test only")
    )
    splits: dict[str, set[str]] = {}
    for split, examples in listing.splits.items():
        for example in examples:
            splits.setdefault(example.path.resolve().name, set()).add(split)
    assert len(splits) == 21 and all(len(found) == 1 for found in splits.values())
    assert listing.notes["files_without_patient_or_study_id"] == 40


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # PatientSex 'm', as some PACS
def test_privacy_no_identifier_reaches_any_file_or_log(tmp_path, capfd):
    secrets = {
        "PatientName": "Doe^Jonathan",
        "PatientID": "MRN-77665544",
        "OtherPatientIDs": "ALT-31415",
        "PatientBirthDate": "19610203",
        "InstitutionName": "St Elsewhere General",
        "AccessionNumber": "ACC-99887766",
        "ReferringPhysicianName": "Welby^Marcus",
        "StudyInstanceUID": "1.2.826.0.1.3680043.2.1143.777",
        "StudyDate": "20190704",
    }
    source = tmp_path / "pacs"
    folder = source / "pneumonia" / "Doe^Jonathan_MRN-77665544"  # PACS folders name patients
    dicom_copy(
        "CT_small.dcm", folder / "Doe_Jonathan_1.dcm", PatientSex="m", PatientAge="057Y", **secrets
    )
    dicom_copy("MR_small.dcm", folder / "Doe_Jonathan_2.dcm", **secrets)
    dicom_copy("MR_truncated.dcm", folder / "Doe_Jonathan_3.dcm", **secrets)  # a skipped one
    for i, (sex, age) in enumerate((("F", "093Y"), ("X", "150Y"), (None, None))):
        dicom_copy(
            "CT_small.dcm",
            source / "normal" / f"n{i}.dcm",
            PatientID=f"N{i}",
            PatientSex=sex,
            PatientAge=age,
        )
    output = tmp_path / "out"
    report = prepare_dataset(DicomArguments(output=output, source=source, num_proc=1))
    main(["prepare", "dicom", "--source", str(source), "--output", str(output), "--overwrite",
          "--num-proc", "1"])  # fmt: skip
    assert report["skipped_count"] == 1
    subgrouped = tmp_path / "subgroups"
    main(["prepare", "dicom", "--source", str(source), "--output", str(subgrouped),
          "--num-proc", "1", "--subgroup-columns", "sex,age_band"])  # fmt: skip
    with_subgroups = json.loads((subgrouped / "prepare_report.json").read_text())
    assert with_subgroups["subgroup_columns"] == ["sex", "age_band"]
    assert with_subgroups["notes"]["ages_over_100_left_out"] == 1
    assert set(load_from_disk(str(subgrouped))["train"].column_names) == (
        set(load_from_disk(str(output))["train"].column_names) | {"sex", "age_band"}
    )
    doe = "pneumonia/Doe^Jonathan_MRN-77665544/Doe_Jonathan_1.dcm"
    subgroups = {
        key: [(row["sex"], row["age_band"]) for row in rows_of(subgrouped, key)]
        for key in (doe, "normal/n0.dcm", "normal/n1.dcm", "normal/n2.dcm")
    }
    assert subgroups == {
        doe: [("M", "40-59")],  # PatientSex 'm', PatientAge '057Y'
        "normal/n0.dcm": [("F", "80+")],  # '093Y'
        "normal/n1.dcm": [(None, None)],  # 'X' is no sex, '150Y' no age
        "normal/n2.dcm": [(None, None)],  # neither tag
    }
    words = [value.lower() for value in secrets.values()] + ["jonathan", "77665544"]
    for prepared, its_report in ((output, report), (subgrouped, with_subgroups)):
        card = dataset_card(its_report, "me/data").content
        assert "## Privacy" in card and "burned into the pixels was not checked" in card
        written = [path.read_bytes().lower() for path in prepared.rglob("*") if path.is_file()]
        log = capfd.readouterr()
        for word in words:
            assert not any(word.encode() in content for content in written), word
            assert word not in (log.out + log.err).lower() and word not in card.lower(), word
    assert "Subgroup attributes: `sex`, `age_band`" in card


def test_salt_is_kept_beside_the_output_so_reruns_agree(raw, tmp_path):
    output = tmp_path / "out"
    subset = tmp_path / "raw"
    shutil.copytree(raw / "ct", subset / "ct")
    shutil.copytree(raw / "ct", subset / "again")
    first = prepare_dataset(DicomArguments(output=output, source=subset, num_proc=1))
    ids = load_from_disk(str(output))["train"]["patient_id"]
    salt = salt_file(output)
    assert salt.parent == output.parent and not (output / salt.name).exists()
    assert stat.S_IMODE(os.stat(salt).st_mode) == 0o600
    assert salt.name in first["notes"]["id_salt"]  # by name: the report holds no path
    assert str(salt.parent) not in (output / "prepare_report.json").read_text()
    prepare_dataset(DicomArguments(output=output, source=subset, num_proc=1, overwrite=True))
    assert load_from_disk(str(output))["train"]["patient_id"] == ids
    given = "a salt of our own, long enough"
    report = prepare_dataset(
        DicomArguments(output=output, source=subset, num_proc=1, overwrite=True, id_salt=given)
    )
    assert set(load_from_disk(str(output))["train"]["patient_id"]).isdisjoint(set(ids) - {None})
    assert report["options"]["id_salt"] == "(given, not recorded)"
    assert given not in (output / "prepare_report.json").read_text()
    with pytest.raises(MedftError, match="at least 16 characters"):
        prepare_dataset(DicomArguments(output=tmp_path / "x", source=subset, id_salt="short"))


def test_command_line_window_and_mistakes(raw, tmp_path, capsys):
    output = tmp_path / "cli"
    argv = ["prepare", "dicom", "--source", str(raw), "--output", str(output), "--num-proc", "1"]
    assert main([*argv, "--window=-600,1500", "--bit-depth", "16"]) == 0
    report = json.loads((output / "prepare_report.json").read_text())
    assert report["dicom"]["window"] == {"center": -600.0, "width": 1500.0}
    assert "Prepared dicom (binary, 2 classes)" in capsys.readouterr().out
    for extra, message in (
        (["--window", "lungs"], "--window 'lungs'"),
        (["--bit-depth", "12"], "--bit-depth must be 8 or 16"),
        (["--csv", str(tmp_path / "x.csv")], "not both"),
    ):
        assert main([*argv, "--overwrite", *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["prepare", "dicom", "--output", str(output)]) == 2
    assert "--source DIR" in capsys.readouterr().err


def salt_routes_source(raw, tmp_path):
    subset = tmp_path / "raw"
    shutil.copytree(raw / "ct", subset / "ct")
    shutil.copytree(raw / "ct", subset / "again")
    return subset


def test_the_salt_comes_from_a_file_the_environment_or_python(raw, tmp_path, monkeypatch):
    source = salt_routes_source(raw, tmp_path)
    salt = "a salt of our own, long enough"
    salt_path = tmp_path / "salt.txt"
    salt_path.write_text(salt + "\n")
    argv = ["prepare", "dicom", "--source", str(source), "--num-proc", "1", "--output"]
    assert main([*argv, str(tmp_path / "file"), "--id-salt-file", str(salt_path)]) == 0
    monkeypatch.setenv("MEDFT_ID_SALT", salt)
    assert main([*argv, str(tmp_path / "environment")]) == 0
    monkeypatch.delenv("MEDFT_ID_SALT")
    prepare_dataset(
        DicomArguments(output=tmp_path / "python", source=source, num_proc=1, id_salt=salt)
    )
    expected = Pseudonyms(salt.encode())("file", "ct/ct_0.dcm")
    for route, how in (
        ("file", "read from --id-salt-file"),
        ("environment", "read from MEDFT_ID_SALT"),
        ("python", "given as id_salt"),
    ):
        output = tmp_path / route
        ids = {i for part in load_from_disk(str(output)).values() for i in part["image_id"]}
        assert expected in ids and not salt_file(output).exists(), route
        text = (output / "prepare_report.json").read_text()
        assert salt not in text and str(salt_path) not in text and str(tmp_path) not in text
        assert json.loads(text)["notes"]["id_salt"] == f"{how} (not recorded)"
    private = json.loads(private_file(tmp_path / "file").read_text())
    assert private["options"]["id_salt_file"] == str(salt_path)


def test_a_bad_salt_file_or_variable_is_named(raw, tmp_path, monkeypatch):
    source = salt_routes_source(raw, tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("short\n")
    with pytest.raises(MedftError, match=r"salt \(read from --id-salt-file\) must be at least 16"):
        prepare_dataset(DicomArguments(output=tmp_path / "a", source=source, id_salt_file=short))
    with pytest.raises(MedftError, match=r"--id-salt-file .*missing.txt cannot be read"):
        prepare_dataset(
            DicomArguments(
                output=tmp_path / "b", source=source, id_salt_file=tmp_path / "missing.txt"
            )
        )
    with pytest.raises(MedftError, match="not both"):
        prepare_dataset(
            DicomArguments(
                output=tmp_path / "c", source=source, id_salt="x" * 20, id_salt_file=short
            )
        )
    monkeypatch.setenv("MEDFT_ID_SALT", "")
    with pytest.raises(MedftError, match=r"salt \(read from MEDFT_ID_SALT\) must be at least 16"):
        prepare_dataset(DicomArguments(output=tmp_path / "d", source=source))


def test_a_salt_on_the_command_line_is_refused_before_anything_is_read(
    raw, tmp_path, monkeypatch, capsys
):
    called = []
    monkeypatch.setattr("medft.prepare.prepare_dataset", lambda *a, **kw: called.append(kw))
    output = tmp_path / "out"
    for option in (["--id-salt", "a salt of our own, long enough"], ["--id_salt=salty-salt-salt"]):
        code = main(["prepare", "dicom", "--source", str(raw), "--output", str(output), *option])
        error = capsys.readouterr().err
        assert code == 2 and error.count("\n") == 1
        assert "`ps` and shell history" in error and "--id-salt-file FILE" in error
        assert "MEDFT_ID_SALT" in error
    assert called == [] and not output.exists() and not salt_file(output).exists()


def test_skipped_files_are_found_by_their_path_in_the_private_record_only(tmp_path):
    source = tmp_path / "export"
    for i in range(3):
        dicom_copy("CT_small.dcm", source / "ct" / f"ct{i}.dcm", PatientID=f"C{i}")
        dicom_copy("MR_small.dcm", source / "mr" / f"mr{i}.dcm", PatientID=f"M{i}")
    skipped = {  # one passed over with its header, one whose pixels fail to decode
        "mr/Smith_Anne/plan.dcm": ("rtplan.dcm", "holds no image: RT Plan Storage"),
        "ct/Smith_Anne/scan.dcm": ("MR_truncated.dcm", "corrupt, truncated or undecodable"),
    }
    for path, (name, _) in skipped.items():
        (source / path).parent.mkdir(parents=True)
        shutil.copy(pydicom_file(name), source / path)
    output = tmp_path / "out"
    report = prepare_dataset(DicomArguments(output=output, source=source, num_proc=1))
    pseudonym = pseudonyms_of(output)
    record = json.loads(private_file(output).read_text())
    found = {item["file"]: item for item in record["skipped"]}
    assert set(found) == set(skipped)
    for path, (_, reason) in skipped.items():
        assert found[path]["reason"].startswith(reason)
        assert found[path]["image_id"] == pseudonym("file", path)
    assert {item["file"] for item in report["skipped"]} == {pseudonym("file", p) for p in skipped}
    assert found["ct/Smith_Anne/scan.dcm"]["split"] in ("train", "validation", "test")
    written = [path.read_bytes() for path in output.rglob("*") if path.is_file()]
    assert not any(b"Smith" in content for content in written)
    assert stat.S_IMODE(os.stat(private_file(output)).st_mode) == 0o600


def test_dicom_subgroup_columns_are_sex_and_age_band_only(raw, tmp_path, capsys):
    for asked in (["sex", "patient_id"], ["PatientName"], ["age"]):
        with pytest.raises(MedftError) as error:
            list_dicom(
                DicomOptions(
                    source=raw, subgroup_columns=asked, id_salt="a salt for this test only"
                )
            )
        message = str(error.value)
        assert message.startswith(f"--subgroup-columns {asked[-1]!r} is not one a DICOM source")
        assert "sex, age_band" in message and "\n" not in message
    argv = ["prepare", "dicom", "--source", str(raw), "--output", str(tmp_path / "out")]
    assert main([*argv, "--subgroup-columns", "sex,study_id"]) == 2
    assert "--subgroup-columns 'study_id'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dicom_ages_over_100_are_impossible():
    assert age_in_years("100Y") == 90 and age_in_years("101Y") is None
    assert age_in_years("999Y") is None and age_in_years("1300M") is None
