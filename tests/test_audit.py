"""medft audit: the leakage audit of a prepared dataset, and of one against another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from medft.cli import main
from medft.config.prepare import FolderArguments
from medft.prepare import prepare_dataset
from tests.real_scans import write_folder_source


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """The same real scans and near copies, prepared with and without near-copy groups."""
    root = tmp_path_factory.mktemp("audit")
    write_folder_source(root / "scans")
    grouped, plain = root / "grouped", root / "plain"
    prepare_dataset(FolderArguments(output=grouped, source=root / "scans", num_proc=1))
    prepare_dataset(
        FolderArguments(output=plain, source=root / "scans", num_proc=1, near_duplicates="off")
    )
    return {"grouped": grouped, "plain": plain}


def audit(capsys, *arguments: str) -> tuple[dict, str]:
    output = Path(arguments[arguments.index("--output") + 1])
    assert main(["audit", *arguments]) == 0
    return json.loads((output / "leakage_audit.json").read_text()), capsys.readouterr().out


def test_an_image_level_split_is_caught_and_a_grouped_one_passes(prepared, tmp_path, capsys):
    before = {path.name: path.stat().st_mtime for path in prepared["plain"].rglob("*")}
    found, printed = audit(capsys, str(prepared["plain"]), "--output", str(tmp_path / "plain"),
                           "--num-proc", "1")  # fmt: skip
    assert found["groups"] == 8 and found["images_in_groups"] == 32
    assert found["groups_across_splits"] > 0
    assert sum(found["with_copy_in_train"].values()) > 0
    assert "near-duplicate groups (pHash within 4 bits): 8, holding 32 of 32 images" in printed
    assert (tmp_path / "plain" / "near_duplicates.png").is_file()
    assert {p.name: p.stat().st_mtime for p in prepared["plain"].rglob("*")} == before  # read-only

    found, _ = audit(capsys, str(prepared["grouped"]), "--output", str(tmp_path / "grouped"))
    assert found["groups"] == 8 and found["groups_across_splits"] == 0
    assert set(found["with_copy_in_train"].values()) == {0}  # stored hashes, no decoding


def test_one_datasets_training_images_against_another(prepared, tmp_path, capsys):
    found, printed = audit(capsys, str(prepared["grouped"]), "--against", str(prepared["plain"]),
                           "--output", str(tmp_path / "against"), "--num-proc", "1")  # fmt: skip
    grouped_train = len(load_from_disk(str(prepared["grouped"]))["train"])
    assert found["split_sizes"]["train"] == grouped_train
    plain = load_from_disk(str(prepared["plain"]))
    for split in ("train", "validation", "test"):
        assert found["split_sizes"][f"plain:{split}"] == len(plain[split])
    assert found["with_copy_in_train"]["plain:test"] > 0  # the same scans, in both datasets
    assert "plain:test" in printed


@pytest.mark.parametrize("threshold", ["off", "17"])
def test_a_threshold_out_of_range_is_one_line(prepared, tmp_path, capsys, threshold):
    code = main(["audit", str(prepared["grouped"]), "--near-duplicates", threshold,
                 "--output", str(tmp_path)])  # fmt: skip
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
