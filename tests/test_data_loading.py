"""`medft.data.loading`: a prepared dataset (or Hub id) read, its splits checked, and the
task read off its features; the median stored image size."""

import pytest
from datasets import Dataset, DatasetDict, Features, Value, load_from_disk
from datasets import Image as ImageFeature
from PIL import Image

import medft.data.loading
from medft.data.loading import check_split, load_training_data, read_dataset, shorter_side, task_of
from medft.errors import MedftError
from tests.helpers import NORMAL_TUMOR, grey_scans, saved_splits


def test_a_prepared_dataset_is_loaded_with_its_task_implied(brain_binary, nih_prepared):
    splits, task = load_training_data(str(brain_binary))
    on_disk = load_from_disk(str(brain_binary))
    assert list(splits) == ["train", "validation", "test"]
    assert [len(part) for part in splits.values()] == [len(on_disk[s]) for s in splits]
    assert (task.task, task.label_column, task.image_column) == ("binary", "label", "image")
    assert task.label_names == on_disk["train"].features["label"].names

    splits, task = load_training_data(str(nih_prepared))
    assert (task.task, task.multi_label, task.label_column) == ("multilabel", True, "labels")
    assert task.label_names == splits["train"].features["labels"].feature.names


def test_the_first_two_splits_are_required_and_the_rest_optional(tmp_path):
    name = saved_splits(
        {"train": grey_scans([(8, 8)] * 4), "validation": grey_scans([(8, 8)] * 2)}, tmp_path
    )
    splits, _ = load_training_data(name)  # no test split: trained without one
    assert list(splits) == ["train", "validation"]
    splits, _ = load_training_data(name, splits=("validation", "train", ""))
    assert list(splits) == ["validation", "train"]
    with pytest.raises(MedftError) as error:
        load_training_data(name, splits=("train", "val", "test"))
    assert str(error.value) == (
        f"dataset {name} has no split(s) val (it has train, validation); set train_split / "
        "eval_split in the recipe."
    )


def test_the_task_comes_from_the_named_columns(tmp_path):
    split = grey_scans([(8, 8)] * 2).rename_column("label", "finding")
    name = saved_splits({"train": split, "validation": split}, tmp_path / "named")
    _, task = load_training_data(name, label_column="finding")
    assert (task.label_column, task.label_names) == ("finding", ["normal", "tumor"])
    with pytest.raises(MedftError) as error:
        load_training_data(name)
    assert str(error.value) == (
        "found no label column 'labels' or 'label' holding a ClassLabel (or a list of them) "
        "among image, finding; set label_column, or prepare the data with `medft prepare`."
    )
    with pytest.raises(MedftError, match=r"no image column 'scan' \(columns: image, finding\)"):
        load_training_data(name, image_column="scan", label_column="finding")


def test_a_label_column_of_plain_numbers_holds_no_task():
    numbers = grey_scans([(8, 8)] * 2, label=Value("int64"))
    with pytest.raises(MedftError, match="found no label column 'label' holding a ClassLabel"):
        task_of(DatasetDict({"train": numbers}), "train", "image", "label")
    multi = Features({"image": ImageFeature(), "labels": [NORMAL_TUMOR]})
    rows = Dataset.from_dict({"image": [Image.new("L", (8, 8))], "labels": [[0, 1]]}, multi)
    task = task_of(DatasetDict({"train": rows}), "train", "image", None)
    assert task.multi_label and task.label_names == ["normal", "tumor"]


def test_a_folder_that_is_not_a_prepared_dataset_is_refused(tmp_path):
    (tmp_path / "scans").mkdir()
    with pytest.raises(MedftError) as error:
        read_dataset(str(tmp_path / "scans"))
    assert str(error.value).startswith(
        f"dataset_name {tmp_path / 'scans'} is not a prepared dataset (no dataset_dict.json); "
    )


def test_a_name_that_is_neither_a_folder_nor_a_hub_dataset_says_why(monkeypatch):
    def offline(name, config):
        raise ConnectionError(f"cannot reach the Hub for {name}\nsecond line")

    monkeypatch.setattr(medft.data.loading, "load_dataset", offline)
    with pytest.raises(MedftError) as error:
        read_dataset("someone/no-such-data")
    assert str(error.value) == (
        "dataset_name 'someone/no-such-data' is neither a local folder nor a loadable Hub "
        "dataset (ConnectionError: cannot reach the Hub for someone/no-such-data)."
    )


def test_a_split_that_is_not_there_is_named_with_those_that_are():
    dataset = DatasetDict({"train": grey_scans([(8, 8)]), "test": grey_scans([(8, 8)])})
    check_split(dataset, "test", "d")
    with pytest.raises(MedftError) as error:
        check_split(dataset, "validation", "d")
    assert str(error.value) == (
        "dataset d has no split 'validation' (it has train, test); choose one with --split."
    )


def test_the_shorter_side_is_the_median_of_the_stored_images_headers():
    split = grey_scans([(30, 50), (40, 40), (60, 20), (90, 100)])
    assert shorter_side(split, "image") == 35  # median of 30, 40, 20, 90
    assert shorter_side(split, "image", sample=3) == 30
    junk = Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}]}, Features({"image": ImageFeature()})
    )
    assert shorter_side(junk, "image") is None
