import shutil
from collections import Counter

import pytest
from datasets import ClassLabel, Image, load_from_disk

from medft.config.prepare import BrainTumorArguments, BrainTumorOptions
from medft.errors import MedftError
from medft.formats.prepared_report import read_report
from medft.prepare import prepare_dataset
from medft.prepare.brain_tumor import BINARY_LABELS, CLASSES, list_brain_tumor_44c
from tests.conftest import SHARED_DATA


def test_the_44_class_names_are_the_datasets_own():
    assert len(CLASSES) == 44 and sorted(CLASSES) == CLASSES
    assert {"Astrocitoma T1C+", "Meduloblastoma T2", "Papiloma T1", "Neurocitoma T1"} < set(CLASSES)
    assert CLASSES[-2:] == ["_NORMAL T1", "_NORMAL T2"]


def test_multiclass_contract(brain_multiclass):
    dataset = load_from_disk(str(brain_multiclass))
    assert list(dataset) == ["train", "validation", "test"]
    features = dataset["train"].features
    assert isinstance(features["image"], Image)
    assert isinstance(features["label"], ClassLabel) and features["label"].names == CLASSES
    assert {"image_id", "tumor_type", "sequence"} <= set(features)
    row = dataset["train"][0]
    assert row["image"].mode in ("L", "RGB")
    assert row["image_id"].split("/")[0] == CLASSES[row["label"]]
    assert row["sequence"] in ("T1", "T1C+", "T2")


def test_every_class_is_assigned_to_every_split(brain_raw):
    # Splits are fixed from the file list, before decoding, so that the binary and
    # 44-class tasks share one assignment; an unreadable file is dropped afterwards.
    listing = list_brain_tumor_44c(BrainTumorOptions(source=brain_raw))
    for split, examples in listing.splits.items():
        assert {example.label for example in examples} == set(range(44)), split


def test_binary_labels_and_same_assignment_as_multiclass(brain_multiclass, brain_binary):
    multi = load_from_disk(str(brain_multiclass))
    binary = load_from_disk(str(brain_binary))
    assert binary["train"].features["label"].names == BINARY_LABELS
    for split in multi:
        assert sorted(multi[split]["image_id"]) == sorted(binary[split]["image_id"])
        for image_id, label in zip(binary[split]["image_id"], binary[split]["label"]):
            is_normal = image_id.split("/")[0] in ("_NORMAL T1", "_NORMAL T2")
            assert label == (0 if is_normal else 1), image_id


def test_bad_files_are_reported_and_clutter_counted(brain_multiclass):
    report = read_report(brain_multiclass)
    reasons = {item["file"]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {
        "Glioblastoma T2/empty.jpg",
        "Glioblastoma T2/truncated.jpeg",
        "Glioblastoma T2/notes.jpg",
    }
    assert reasons["Glioblastoma T2/empty.jpg"] == "empty file (0 bytes)"
    assert "truncated" in reasons["Glioblastoma T2/truncated.jpeg"]
    assert report["skipped_count"] == 3
    assert report["ignored"] == {"system file (.DS_Store)": 1, "system file (Thumbs.db)": 1}
    kept = sum(report["counts"].values())
    assert kept == 44 * 6 + 4 * 2  # 6 scans per class, plus a screenshot and a copy in 4 classes


def test_the_mri_sequence_is_the_brain_scans_subgroup_column(brain_multiclass):
    # the sequence is how a scan was acquired (as NIH's view position); the tumour type is
    # the label itself
    assert read_report(brain_multiclass)["subgroup_columns"] == ["sequence"]
    sequences = set(load_from_disk(str(brain_multiclass))["test"]["sequence"])
    assert sequences == {"T1", "T1C+", "T2"}


def test_mixed_extensions_and_modes_are_all_kept(brain_multiclass):
    dataset = load_from_disk(str(brain_multiclass))
    ids = [i for split in dataset for i in dataset[split]["image_id"]]
    assert Counter(i.rsplit(".", 1)[1] for i in ids).keys() >= {"jpeg", "jpg", "JPG", "webp"}
    assert read_report(brain_multiclass)["image_modes"].keys() == {"L", "RGB"}


def test_byte_identical_copies_share_a_split(brain_multiclass):
    dataset = load_from_disk(str(brain_multiclass))
    split_of = {i: s for s in dataset for i in dataset[s]["image_id"]}
    copies = [i for i in split_of if i.split("/")[1].startswith("copy of ")]
    assert len(copies) == 4
    for copy in copies:
        folder, name = copy.split("/")
        assert split_of[copy] == split_of[f"{folder}/{name.removeprefix('copy of ')}"]
    assert read_report(brain_multiclass)["notes"]["byte_identical_groups"] == 4


def test_split_is_deterministic_for_a_seed(brain_raw):
    def assignment(seed):
        listing = list_brain_tumor_44c(BrainTumorOptions(source=brain_raw, seed=seed))
        return {s: sorted(e.metadata["image_id"] for e in ex) for s, ex in listing.splits.items()}

    assert assignment(5) == assignment(5)
    assert assignment(5) != assignment(6)


def test_unknown_class_folder_is_named(brain_raw, tmp_path):
    source = tmp_path / "brain"
    shutil.copytree(brain_raw, source)
    (source / "Astrocytoma T1").mkdir()
    with pytest.raises(MedftError, match="'Astrocytoma T1' is not one of the 44.*'Astrocitoma T1'"):
        list_brain_tumor_44c(BrainTumorOptions(source=source))


def test_missing_class_folder_is_named(brain_raw, tmp_path):
    source = tmp_path / "brain"
    shutil.copytree(brain_raw, source)
    shutil.rmtree(source / "Germinoma T1C+")
    with pytest.raises(MedftError, match=r"lacks the class folder\(s\) 'Germinoma T1C\+'"):
        list_brain_tumor_44c(BrainTumorOptions(source=source))


def test_a_wrapper_folder_around_the_classes_is_found(brain_raw, tmp_path):
    shutil.copytree(brain_raw, tmp_path / "archive" / "Brain-Tumor-44c")
    listing = list_brain_tumor_44c(BrainTumorOptions(source=tmp_path / "archive"))
    assert listing.source.endswith("Brain-Tumor-44c")


def test_empty_source_and_bad_task(tmp_path):
    with pytest.raises(MedftError, match="holds none of the 44 class folders"):
        list_brain_tumor_44c(BrainTumorOptions(source=tmp_path))
    with pytest.raises(MedftError, match="--task"):
        list_brain_tumor_44c(BrainTumorOptions(source=tmp_path, task="tumour"))


def test_pre_resize_shrinks_the_shorter_side(brain_raw, tmp_path):
    output = tmp_path / "small"
    prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, image_size=24, num_proc=1))
    dataset = load_from_disk(str(output))
    sizes = {min(dataset["train"][i]["image"].size) for i in range(20)}
    assert sizes == {24}
    assert read_report(output)["options"]["image_size"] == 24


REAL_SAMPLE = SHARED_DATA / "brain-tumor-44c-sample"


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason="the real brain sample is not beside the repo")
def test_real_brain_sample_gives_1266_images_in_44_classes(tmp_path):
    report = prepare_dataset(
        BrainTumorArguments(output=tmp_path / "real", source=REAL_SAMPLE, num_proc=2)
    )
    # near copies (adjacent slices, re-exports) share a split, so the splits are of groups
    assert report["counts"] == {"train": 878, "validation": 184, "test": 204}
    leakage = report["near_duplicates"]
    assert leakage["after"]["with_copy_in_train"] == {"test": 0, "validation": 0}
    assert leakage["without_near_duplicate_groups"]["with_copy_in_train"] == {
        "test": 49,
        "validation": 53,
    }
    plain = prepare_dataset(
        BrainTumorArguments(
            output=tmp_path / "plain", source=REAL_SAMPLE, num_proc=2, near_duplicates="off"
        )
    )
    assert plain["counts"] == {"train": 924, "validation": 171, "test": 171}  # as before
    data = load_from_disk(str(tmp_path / "real"))
    assert data["train"].features["label"].names == CLASSES
    assert {label for split in data.values() for label in split["label"]} == set(range(44))
    binary = prepare_dataset(
        BrainTumorArguments(
            output=tmp_path / "binary", source=REAL_SAMPLE, task="binary", num_proc=2
        )
    )
    assert binary["counts"] == report["counts"]
    normal = Counter(load_from_disk(str(tmp_path / "binary"))["train"]["label"])[0]
    assert normal == 44
