import json
import os
import stat

import pytest
from datasets import Dataset, Features, SplitInfo, load_from_disk
from datasets.utils.info_utils import verify_splits

from medft.config.prepare import BrainTumorArguments, BrainTumorOptions
from medft.errors import MedftError
from medft.formats.prepared_report import read_report
from medft.prepare import prepare_dataset
from medft.prepare.brain_tumor import list_brain_tumor_44c
from medft.prepare.private import KEPT_PRIVATELY, private_file
from medft.prepare.report import format_summary
from medft.prepare.writer import write_dataset


def test_parallel_and_serial_runs_write_the_same_dataset(brain_multiclass, brain_raw, tmp_path):
    serial = tmp_path / "serial"
    prepare_dataset(BrainTumorArguments(output=serial, source=brain_raw, num_proc=1))
    a, b = load_from_disk(str(brain_multiclass)), load_from_disk(str(serial))
    for split in a:
        assert a[split]["image_id"] == b[split]["image_id"]
        assert a[split]["label"] == b[split]["label"]
        assert (
            a[split].data.column("image").to_pylist() == b[split].data.column("image").to_pylist()
        )


def test_original_bytes_are_stored_without_re_encoding(brain_multiclass, brain_raw):
    dataset = load_from_disk(str(brain_multiclass))
    stored = dataset["train"].data.column("image").to_pylist()
    ids = dataset["train"]["image_id"]
    for image, image_id in list(zip(stored, ids))[:25]:
        assert image["bytes"] == (brain_raw / image_id).read_bytes()


def test_existing_output_needs_overwrite_and_overwrite_replaces(brain_raw, tmp_path):
    output = tmp_path / "out"
    prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, task="binary", num_proc=1))
    with pytest.raises(MedftError, match="already holds files.*--overwrite"):
        prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, num_proc=1))
    prepare_dataset(
        BrainTumorArguments(output=output, source=brain_raw, num_proc=1, overwrite=True)
    )
    assert len(load_from_disk(str(output))["train"].features["label"].names) == 44
    # no staging left behind; the private record beside the dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.private.json"]


def test_overwrite_never_deletes_a_folder_that_is_not_a_dataset(brain_raw, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(MedftError, match="not a prepared dataset"):
        prepare_dataset(BrainTumorArguments(output=tmp_path, source=brain_raw, overwrite=True))
    assert (tmp_path / "thesis.tex").exists()


def test_output_that_is_a_file_and_empty_listing(brain_raw, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MedftError, match="is a file"):
        prepare_dataset(BrainTumorArguments(output=tmp_path / "file", source=brain_raw))
    listing = list_brain_tumor_44c(BrainTumorOptions(source=brain_raw))
    listing.splits = {split: [] for split in listing.splits}
    with pytest.raises(MedftError, match="No images found"):
        write_dataset(listing, tmp_path / "empty")


def test_report_and_summary(brain_multiclass):
    report = read_report(brain_multiclass)
    assert report["source_type"] == "brain-tumor-44c" and report["task"] == "multiclass"
    assert set(report["options"]) >= {"source", "task", "val_size", "test_size", "seed"}
    assert report["class_counts"]["train"]["Astrocitoma T1"] > 0
    summary = format_summary(report, brain_multiclass)
    assert "Astrocitoma T1C+" in summary and "skipped: 3" in summary
    assert "ignored: 2" in summary and len(summary.splitlines()) < 70


def test_large_splits_are_written_as_several_shards(
    brain_raw, brain_multiclass, tmp_path, monkeypatch
):
    monkeypatch.setattr("medft.prepare.writer.MAX_CHUNK", 20)
    output = tmp_path / "sharded"
    prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, num_proc=1))
    shards = sorted(p.name for p in (output / "train").glob("*.arrow"))
    assert len(shards) > 3 and shards[0] == f"data-00000-of-{len(shards):05d}.arrow"
    sharded, single = load_from_disk(str(output)), load_from_disk(str(brain_multiclass))
    for split in single:
        assert sharded[split]["image_id"] == single[split]["image_id"]
    assert sharded["test"][3]["image"].size == single["test"][3]["image"].size


def test_the_written_layout_is_what_save_to_disk_writes(brain_multiclass, tmp_path):
    """The writer builds `save_to_disk`'s layout with datasets' ArrowWriter (not public API):
    what datasets itself writes for the same data must match it, and datasets' own readers
    and checks must accept it (the datasets version bounds in pyproject.toml point here)."""
    ours = load_from_disk(str(brain_multiclass))
    ours.save_to_disk(str(tmp_path / "theirs"))
    theirs = load_from_disk(str(tmp_path / "theirs"))
    for split in ours:
        folder = brain_multiclass / split
        state, reference = (
            json.loads((root / split / "state.json").read_text())
            for root in (brain_multiclass, tmp_path / "theirs")
        )
        assert set(state) == set(reference) and state["_split"] == reference["_split"] == split
        info = json.loads((folder / "dataset_info.json").read_text())
        assert Features.from_dict(info["features"]) == ours[split].features
        shards = [
            Dataset.from_file(str(folder / entry["filename"])) for entry in state["_data_files"]
        ]
        assert sum(len(shard) for shard in shards) == len(ours[split]) == len(theirs[split])
        assert shards[0].features == ours[split].features
        ours[split].data.table.validate(full=True)
        assert ours[split]["image_id"] == theirs[split]["image_id"]
    recorded = {split: SplitInfo(split, num_examples=len(ours[split])) for split in ours}
    verify_splits(
        recorded, {split: SplitInfo(split, num_examples=len(theirs[split])) for split in theirs}
    )


def test_the_paths_go_to_a_private_record_beside_the_dataset(brain_raw, tmp_path):
    output = tmp_path / "out"
    report = prepare_dataset(BrainTumorArguments(output=output, source=brain_raw, num_proc=1))
    assert report["name"] == "out" and "source" not in report
    assert report["options"]["source"] == KEPT_PRIVATELY
    assert str(brain_raw) not in (output / "prepare_report.json").read_text()
    private = private_file(output)
    assert private == tmp_path / "out.private.json"
    record = json.loads(private.read_text())
    assert record["source"] == record["options"]["source"] == str(brain_raw.resolve())
    assert record["dataset"] == str(output.resolve())
    assert [item["file"] for item in record["skipped"]] == [
        item["file"] for item in report["skipped"]
    ]  # brain files are skipped by their path in the source already
    private.chmod(0o644)
    prepare_dataset(
        BrainTumorArguments(
            output=output, source=brain_raw, num_proc=1, overwrite=True, name="brain scans"
        )
    )
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert read_report(output)["name"] == "brain scans"
    summary = format_summary(read_report(output), output)
    assert f"private: {private} (the source path" in summary


@pytest.mark.parametrize("name", ["", "exports/scans", "C:\\scans"])
def test_a_name_that_is_a_path_is_refused(brain_raw, tmp_path, name):
    with pytest.raises(MedftError, match="must be a name, not a path"):
        prepare_dataset(BrainTumorArguments(output=tmp_path / "out", source=brain_raw, name=name))
