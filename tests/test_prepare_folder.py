import shutil
import zlib

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from medft.config.prepare import FolderArguments, FolderOptions
from medft.errors import MedftError
from medft.prepare import prepare_dataset
from medft.prepare.folder import list_image_folder
from tests.oversized import constant_png


def make_images(folder, n, shade=0):
    """``n`` distinct images (distinct bytes, so none is grouped as a duplicate)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(folder).encode()))
    for i in range(n):
        pixels = rng.integers(0, 40, (16, 16)) + shade
        Image.fromarray(pixels.astype(np.uint8), mode="L").save(folder / f"img{i:03d}.png")


def test_class_per_subfolder(tmp_path):
    for name, shade in (("benign", 0), ("malignant", 100), ("normal", 200)):
        make_images(tmp_path / "src" / name, 20, shade)
    (tmp_path / "src" / "readme.txt").write_text("notes")
    make_images(tmp_path / "src", 1)  # an image beside the class folders
    output = tmp_path / "out"
    report = prepare_dataset(FolderArguments(output=output, source=tmp_path / "src", num_proc=1))
    dataset = load_from_disk(str(output))
    assert dataset["train"].features["label"].names == ["benign", "malignant", "normal"]
    assert report["counts"] == {"train": 42, "validation": 9, "test": 9}
    assert report["subgroup_columns"] == []  # a folder of images knows no patient attribute
    assert report["ignored"] == {
        "image outside a class folder (dataset root)": 1,
        "not an image extension (.txt)": 1,
    }


def test_given_splits_are_kept(tmp_path):
    for split, n in (("train", 10), ("val", 4), ("test", 5)):
        for name in ("a", "b"):
            make_images(tmp_path / split / name, n, shade=50 if name == "b" else 0)
    listing = list_image_folder(FolderOptions(source=tmp_path))
    counts = {split: len(examples) for split, examples in listing.splits.items()}
    assert counts == {"train": 20, "validation": 8, "test": 10}
    first = listing.splits["validation"][0].metadata["image_id"]
    assert first.startswith("val/")
    assert listing.notes["splits_given_as_folders"] == "test, train, val"


def test_training_testing_layout_carves_validation_from_train(tmp_path):
    for split in ("Training", "Testing"):
        for name in ("glioma", "notumor"):
            make_images(tmp_path / split / name, 20, shade=90 if name == "glioma" else 0)
    listing = list_image_folder(FolderOptions(source=tmp_path, val_size=0.2))
    counts = {split: len(examples) for split, examples in listing.splits.items()}
    assert counts == {"train": 32, "validation": 8, "test": 40}
    assert all(e.metadata["image_id"].startswith("Training/") for e in listing.splits["validation"])


def test_identical_files_across_given_splits_are_flagged(tmp_path):
    for name in ("a", "b"):
        make_images(tmp_path / "train" / name, 3, shade=0 if name == "a" else 80)
        shutil.copytree(tmp_path / "train" / name, tmp_path / "test" / name)
    listing = list_image_folder(FolderOptions(source=tmp_path))
    assert listing.notes["identical_files_in_two_given_splits"] == 6


def test_one_class_or_no_class_is_an_error(tmp_path):
    with pytest.raises(MedftError, match="found none as class folder"):
        list_image_folder(FolderOptions(source=tmp_path))
    make_images(tmp_path / "only", 3)
    with pytest.raises(MedftError, match="found only 'only'"):
        list_image_folder(FolderOptions(source=tmp_path))


def test_split_folders_need_train_and_no_twins(tmp_path):
    make_images(tmp_path / "a" / "val" / "x", 2)
    make_images(tmp_path / "a" / "test" / "x", 2)
    with pytest.raises(MedftError, match="no train/ folder"):
        list_image_folder(FolderOptions(source=tmp_path / "a"))
    make_images(tmp_path / "b" / "train" / "x", 2)
    make_images(tmp_path / "b" / "val" / "x", 2)
    make_images(tmp_path / "b" / "validation" / "x", 2)
    with pytest.raises(MedftError, match="two folders for the validation split"):
        list_image_folder(FolderOptions(source=tmp_path / "b"))


def test_an_image_over_the_pixel_budget_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFT_MAX_MEGAPIXELS", raising=False)
    for name, shade in (("a", 0), ("b", 100)):
        make_images(tmp_path / "src" / name, 10, shade)
    constant_png(tmp_path / "src" / "a" / "bomb.png", 12_000, 12_000)  # 140 KB, 144 megapixels
    report = prepare_dataset(
        FolderArguments(output=tmp_path / "out", source=tmp_path / "src", num_proc=1)
    )
    assert sum(report["counts"].values()) == 20 and report["skipped_count"] == 1
    (skipped,) = report["skipped"]
    assert skipped["file"].endswith("bomb.png")
    assert skipped["reason"] == (
        "image too large to decode safely: 144000000 pixels (144.0 megapixels) is over medft's "
        "budget of 50 megapixels; set MEDFT_MAX_MEGAPIXELS to raise it for real large scans"
    )
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "150")  # a real large scan: read as any other
    report = prepare_dataset(
        FolderArguments(output=tmp_path / "raised", source=tmp_path / "src", num_proc=1)
    )
    assert sum(report["counts"].values()) == 21 and report["skipped_count"] == 0
