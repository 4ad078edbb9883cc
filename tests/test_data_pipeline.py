"""`medft.data.pipeline`: the splits a run trains and evaluates on, as `load_data` cuts them
(sample limits, the training probe, a cross-validation fold), what identifies them, and the
DICOM settings a recipe may change (the transforms it sets: test_data_transforms; the
input-size warning: test_training)."""

import shutil

import pytest
from datasets import Dataset

from medft.config import DataArguments
from medft.data.folds import fold_splits
from medft.data.pipeline import (
    dataset_identity,
    dicom_settings,
    limit,
    load_data,
    recipe_splits,
)
from medft.errors import MedftError
from medft.parsing import parse_recipe
from tests.helpers import grey_scans, saved_splits

SIZES = {"train": 10, "validation": 6, "test": 4}


def numbered(rows: int) -> Dataset:
    """A split of ``rows`` grey scans with a ``row`` column to tell them apart."""
    return grey_scans([(8, 8)] * rows).add_column("row", list(range(rows)))


@pytest.fixture
def three_splits(tmp_path) -> str:
    return saved_splits({split: numbered(rows) for split, rows in SIZES.items()}, tmp_path / "d")


def training_arguments(folder, **settings):
    """The training half of a recipe, as `medft train` parses it."""
    values = {"model_name_or_path": "vit", "dataset_name": "d", "output_dir": str(folder)}
    return parse_recipe(values=values | settings).training


def test_the_splits_are_limited_and_a_training_probe_drawn(three_splits, tmp_path):
    args = training_arguments(tmp_path / "o", seed=3, train_metrics_samples=2)
    data_args = DataArguments(three_splits, max_train_samples=5, max_eval_samples=3)
    data = load_data(data_args, args)
    assert data.split_sizes() == {"train": 5, "validation": 3, "test": 3}
    assert data.validation is data.eval_sets["validation"] and list(data.eval_sets)[1] == "test"
    assert set(data.train_probe["row"]) < set(data.train_set["row"]) and len(data.train_probe) == 2
    assert data.train_labels == list(data.train_set["label"])
    assert (data.task.task, data.dicom) == ("binary", None)
    again = load_data(data_args, args)
    assert again.train_set["row"] == data.train_set["row"]  # the same seed, the same rows


def test_no_probe_without_train_metrics_samples_and_no_test_split_when_it_is_skipped(
    three_splits, tmp_path
):
    args = training_arguments(tmp_path / "o", train_metrics_samples=0)
    data = load_data(DataArguments(three_splits, test_split=""), args)
    assert data.train_probe is None
    assert data.split_sizes() == {"train": 10, "validation": 6}


def test_a_limit_keeps_a_seeded_sample_and_no_limit_keeps_all():
    split = numbered(10)
    assert limit(split, None, 0) is split
    assert sorted(limit(split, 50, 0)["row"]) == list(range(10))
    assert limit(split, 4, 0)["row"] == limit(split, 4, 0)["row"] != limit(split, 4, 1)["row"]


def test_the_recipe_splits_are_those_it_names_as_loaded(three_splits):
    renamed = DataArguments(three_splits, train_split="validation", eval_split="train")
    splits, task = recipe_splits(renamed)
    assert {name: len(rows) for name, rows in splits.items()} == {
        "validation": 6,
        "train": 10,
        "test": 4,
    }
    assert task.label_names == ["normal", "tumor"]


def test_the_identity_is_the_data_as_loaded_not_its_path_or_the_recipe_limits(
    three_splits, tmp_path
):
    args = training_arguments(tmp_path / "o")
    identity = load_data(DataArguments(three_splits), args).identity
    assert identity["sizes"] == SIZES
    assert (identity["labels"], identity["multi_label"]) == (["normal", "tumor"], False)
    moved = shutil.copytree(three_splits, tmp_path / "elsewhere")
    limited = DataArguments(str(moved), max_train_samples=2, max_eval_samples=2)
    assert load_data(limited, args).identity == identity
    splits, task = recipe_splits(DataArguments(three_splits))
    changed = splits | {"train": splits["train"].select(range(9))}
    assert (
        dataset_identity(changed, task)["fingerprints"]["train"]
        != (identity["fingerprints"]["train"])
    )


def test_a_cross_validation_fold_is_cut_from_train_and_validation_only(three_splits, tmp_path):
    args = training_arguments(tmp_path / "o", seed=0)
    splits, task = recipe_splits(DataArguments(three_splits))
    for fold in range(3):
        data = load_data(DataArguments(three_splits, cv_folds=3, cv_fold=fold), args)
        train, held_out = fold_splits(task, splits["train"], splits["validation"], 3, fold, 0)
        assert data.train_set["row"] == train["row"]
        assert data.validation["row"] == held_out["row"]
        assert data.eval_sets["test"]["row"] == list(range(4))  # the test split left alone
        assert data.identity["sizes"] == SIZES  # the data as loaded, before the fold


def test_a_dicom_window_needs_a_dataset_of_dicom_files(three_splits):
    assert dicom_settings(DataArguments(three_splits)) is None
    with pytest.raises(MedftError) as error:
        dicom_settings(DataArguments(three_splits, dicom_window="lung"))
    assert str(error.value) == (
        "dicom_window needs a dataset prepared with `medft prepare dicom --bit-depth 16`; "
        f"{three_splits} holds no DICOM images, windowed when they were prepared. Prepare it "
        "again with --bit-depth 16 (or with --window), or remove dicom_window."
    )
