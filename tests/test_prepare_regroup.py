"""Near copies of real scans kept in one split by medft prepare (medft.prepare.regroup)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from medft.config.prepare import FolderArguments
from medft.prepare import prepare_dataset
from medft.prepare.hub import dataset_card
from medft.prepare.report import format_summary
from tests.real_scans import write_folder_source


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("scans")
    return root, write_folder_source(root)


def split_of_each(output: Path) -> dict[str, str]:
    return {
        image_id: split
        for split, part in load_from_disk(str(output)).items()
        for image_id in part["image_id"]
    }


def test_every_near_copy_shares_its_scans_split_and_distinct_scans_stay_apart(scans, tmp_path):
    root, versions = scans
    report = prepare_dataset(FolderArguments(output=tmp_path / "grouped", source=root, num_proc=1))
    split_of = split_of_each(tmp_path / "grouped")
    for scan, files in versions.items():
        assert len({split_of[file] for file in files}) == 1, scan
    leakage = report["near_duplicates"]
    assert leakage["after"]["groups"] == len(versions)  # one group per scan, none joined
    assert leakage["after"]["groups_across_splits"] == 0
    assert set(leakage["after"]["with_copy_in_train"].values()) == {0}
    assert len(set(split_of.values())) == 3  # the scans still fill three splits
    assert (tmp_path / "grouped" / leakage["contact_sheet"]).is_file()
    card = dataset_card(report, "me/scans").content
    assert "## Near copies" in card and "![The largest groups](near_duplicates.png)" in card
    summary = format_summary(report, tmp_path / "grouped")
    assert f"near-duplicate groups (pHash within 4 bits): {len(versions)}, holding" in summary

    plain = prepare_dataset(
        FolderArguments(output=tmp_path / "plain", source=root, num_proc=1, near_duplicates="off")
    )
    assert plain["near_duplicates"] is None and "perceptual_hash" not in (
        load_from_disk(str(tmp_path / "plain"))["train"].column_names
    )
    split_of = split_of_each(tmp_path / "plain")
    straddling = [
        scan for scan, files in versions.items() if len({split_of[file] for file in files}) > 1
    ]
    assert straddling  # an image-level split leaks copies across splits
    without = leakage["without_near_duplicate_groups"]
    assert without["groups_across_splits"] == len(straddling)


def test_a_given_split_is_kept_and_its_copies_counted(scans, tmp_path):
    root, versions = scans
    given = tmp_path / "given"
    originals = {files[0] for files in versions.values()}
    for file in sorted(root.rglob("*.png")):  # originals in train/, their copies in test/
        split = "train" if file.relative_to(root).as_posix() in originals else "test"
        target = given / split / file.parent.name / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
    report = prepare_dataset(FolderArguments(output=tmp_path / "out", source=given, num_proc=1))
    assert report["counts"]["test"] == 3 * len(versions)  # given splits are never changed
    after = report["near_duplicates"]["after"]
    assert after["groups_across_splits"] == len(versions)  # each scan's copies: train and test
    in_train = [file for file, split in split_of_each(tmp_path / "out").items() if split == "train"]
    assert after["with_copy_in_train"]["test"] == 3 * len(in_train)


def test_groups_that_empty_a_split_are_a_warning(tmp_path):
    source = tmp_path / "copies"
    for label, shade in (("a", 0), ("b", 120)):  # every image of a class is one picture
        (source / label).mkdir(parents=True)
        for index in range(10):
            pixels = np.full((32, 32), shade, dtype=np.uint8)
            pixels[:, index] = 255 - shade  # a line that moves: near copies, not identical
            Image.fromarray(pixels).save(source / label / f"{index}.png")
    report = prepare_dataset(FolderArguments(output=tmp_path / "out", source=source, num_proc=1))
    assert "empty" in report["near_duplicates"]["warning"]
    assert "warning: the near-copy groups left" in format_summary(report, tmp_path / "out")
