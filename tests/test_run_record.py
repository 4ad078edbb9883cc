"""A run's output_dir: resumed only by the same run, refused to another, replaced on request."""

import dataclasses
import json
import logging
import shutil
import time

import pytest
from safetensors.torch import save_file

from medft.config import DataArguments, MedftTrainingArguments, ModelArguments
from medft.errors import MedftError
from medft.training.run_record import (
    NOT_TRAINED,
    RECORD_NAME,
    RunRecord,
    claim_output_dir,
    owned_files,
)
from tests.helpers import run_recipe

RECIPE = "tiny_timm.yaml"


@pytest.fixture(scope="module")
def multiclass_run(brain_multiclass, tmp_path_factory):
    """A finished 44-class run."""
    output = tmp_path_factory.mktemp("runs") / "model"
    run_recipe(RECIPE, brain_multiclass, output)
    return output


def labels_of(folder) -> int:
    return json.loads((folder / "config.json").read_text())["num_classes"]  # timm's config


def test_the_record_names_no_path_and_says_the_run_finished(multiclass_run, brain_multiclass):
    text = (multiclass_run / RECORD_NAME).read_text()
    record = json.loads(text)
    assert str(multiclass_run) not in text and str(brain_multiclass) not in text
    assert record["finished"] and len(record["dataset"]["labels"]) == 44
    assert "learning_rate" in record["settings"] and "output_dir" not in record["settings"]
    assert RunRecord.read(multiclass_run).recipe == record["recipe"]


def test_the_run_owns_every_file_it_wrote(multiclass_run):
    """What a run writes (its subgroup plots too) is what overwrite and cv remove."""
    assert any(multiclass_run.glob("subgroups_*.png"))
    assert owned_files(multiclass_run) == sorted(multiclass_run.iterdir())


def test_another_recipe_or_dataset_is_refused_in_one_line(
    multiclass_run, brain_multiclass, brain_binary
):
    model = (multiclass_run / "model.safetensors").read_bytes()
    with pytest.raises(MedftError) as refused:
        run_recipe(RECIPE, brain_binary, multiclass_run)
    message = str(refused.value)
    assert f"output_dir {multiclass_run} holds another run (differs in: the dataset)" in message
    assert "--overwrite_output_dir true" in message and "\n" not in message
    with pytest.raises(MedftError, match=r"differs in: learning_rate \(now 0\.01\)\)"):
        run_recipe(RECIPE, brain_multiclass, multiclass_run, "--learning_rate", "0.01")
    assert labels_of(multiclass_run) == 44  # untouched
    assert (multiclass_run / "model.safetensors").read_bytes() == model


def test_overwrite_replaces_every_file_of_the_run_and_keeps_the_others(
    multiclass_run, brain_binary, tmp_path
):
    output = tmp_path / "model"
    shutil.copytree(multiclass_run, output)
    (output / "dicom.json").write_text('{"window": null, "bit_depth": 16}')  # from a DICOM run
    (output / "thresholds.json").write_text("{}")
    (output / "notes.txt").write_text("mine")
    started = time.time()
    run_recipe(RECIPE, brain_binary, output, "--overwrite_output_dir", "true")
    assert labels_of(output) == 2
    assert not (output / "dicom.json").exists() and (output / "notes.txt").read_text() == "mine"
    stale = [p.name for p in output.rglob("*") if p.is_file() and p.stat().st_mtime < started]
    assert stale == ["notes.txt"]
    assert json.loads((output / "thresholds.json").read_text())["values"]  # the new run's


def checkpoints_of(folder):
    return sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def test_an_incomplete_checkpoint_is_passed_over_and_the_run_resumes_before_it(
    brain_binary, tmp_path, caplog
):
    output = tmp_path / "model"
    run_recipe(RECIPE, brain_binary, output, "--num_train_epochs", "2")
    first, last = checkpoints_of(output)
    (last / "trainer_state.json").unlink()  # what a kill during the save leaves
    step = int(last.name.split("-")[1]) - int(first.name.split("-")[1])
    truncated = output / f"checkpoint-{int(last.name.split('-')[1]) + step}"
    shutil.copytree(first, truncated)
    (truncated / "model.safetensors").write_bytes(b"")  # a disk that filled up
    with caplog.at_level(logging.INFO, logger="medft"):
        run_recipe(RECIPE, brain_binary, output, "--num_train_epochs", "2")
    log = caplog.text
    assert f"Passed over the incomplete {last.name} (no trainer_state.json)" in log
    assert f"{truncated.name} (model.safetensors is empty or truncated)" in log
    assert f"Resuming from {first}" in log
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == int(last.name.split("-")[1]) and state["epoch"] == 2


def test_an_incomplete_resume_from_checkpoint_is_a_one_line_error(brain_binary, tmp_path):
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    save_file({}, str(checkpoint / "model.safetensors"))
    with pytest.raises(MedftError, match="checkpoint-3 is incomplete \\(no trainer_state.json\\)"):
        run_recipe(RECIPE, brain_binary, tmp_path / "model", "--resume_from_checkpoint",
                   str(checkpoint))  # fmt: skip


def test_a_run_without_a_record_is_refused(brain_binary, tmp_path):
    """A folder from an older medft or another tool: its checkpoints are not resumed."""
    output = tmp_path / "model"
    (output / "checkpoint-3").mkdir(parents=True)
    (output / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (output / "config.json").write_text("{}")
    with pytest.raises(MedftError, match=f"config.json without a {RECORD_NAME}"):
        run_recipe(RECIPE, brain_binary, output)


def test_a_fresh_start_removes_what_a_run_left_and_keeps_the_rest(tmp_path):
    """The record matches but no checkpoint is complete (killed during the first save)."""
    record = RunRecord.of({"learning_rate": 0.001}, {"fingerprints": {"train": "abc"}})
    record.write(tmp_path)
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "thresholds.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    assert claim_output_dir(tmp_path, record, overwrite=False) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_NAME, "notes.txt"]
    assert not RunRecord.read(tmp_path).finished


def test_the_settings_left_out_of_the_record_are_recipe_keys():
    """A misspelt or vanished name here would silently put a setting back into the record."""
    classes = (DataArguments, ModelArguments, MedftTrainingArguments)
    keys = {item.name for cls in classes for item in dataclasses.fields(cls)}
    assert not NOT_TRAINED - keys
