"""What `--push-to-hub` would upload: the Hub is out of reach here, so its client is faked."""

import json
import shutil

import pytest
from datasets import DatasetDict
from huggingface_hub import DatasetCard, HfApi
from PIL import Image

from medft.config.prepare import FolderArguments
from medft.errors import MedftError
from medft.formats.prepared_report import read_report
from medft.prepare import prepare_dataset
from medft.prepare.hub import dataset_card, push_dataset


def test_card_describes_the_prepared_dataset(nih_prepared):
    card = dataset_card(read_report(nih_prepared), "me/cxr14")
    assert card.data.task_categories == ["image-classification"]
    assert {"medical", "chestxray14", "multilabel"} <= set(card.data.tags)
    assert card.data.pretty_name == "NIH ChestX-ray14"
    text = card.text
    assert "| Pleural_Thickening |" in text and 'load_dataset("me/cxr14")' in text
    assert "not for clinical use" in text.lower() and "@inproceedings{wang2017" in text
    counts = read_report(nih_prepared)["counts"]
    assert f"| test | {counts['test']} |" in text


def test_card_lists_the_subgroup_columns_where_there_are_any(nih_prepared, brain_multiclass):
    card = dataset_card(read_report(nih_prepared), "me/cxr14").text
    assert "Subgroup attributes: `sex`, `age_band`, `view_position`" in card
    assert "0-17, 18-39, 40-59, 60-79, 80+" in card
    brain = read_report(brain_multiclass)
    assert "Subgroup attributes: `sequence`" in dataset_card(brain, "me/b").text
    assert "Subgroup attributes" not in dataset_card(brain | {"subgroup_columns": []}, "me/b").text


def test_push_uploads_card_then_data_then_report(brain_multiclass, monkeypatch):
    calls = []
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, repo_id, **kw: (
            calls.append(("repo", repo_id, kw)) or f"https://huggingface.co/datasets/{repo_id}"
        ),
    )
    monkeypatch.setattr(
        DatasetCard,
        "push_to_hub",
        lambda self, repo_id, **kw: calls.append(("card", str(self), kw)),
    )
    monkeypatch.setattr(
        DatasetDict, "push_to_hub", lambda self, repo_id, **kw: calls.append(("data", self, kw))
    )
    monkeypatch.setattr(
        HfApi, "upload_file", lambda self, **kw: calls.append(("file", kw["path_in_repo"], kw))
    )
    url = push_dataset(brain_multiclass, "me/brain44", private=True)
    assert url == "https://huggingface.co/datasets/me/brain44"
    assert [call[0] for call in calls] == ["repo", "card", "data", "file", "file"]
    assert calls[0][2]["repo_type"] == "dataset" and calls[0][2]["private"] is True
    assert "Brain Tumor MRI Images 44 Classes" in calls[1][1]
    assert calls[1][2]["repo_type"] == "dataset"
    assert list(calls[2][1]) == ["train", "validation", "test"]
    assert calls[3][1] == "prepare_report.json"
    assert calls[4][1] == "near_duplicates.png"  # the card shows the largest near-copy groups


def test_push_needs_a_prepared_folder(tmp_path):
    with pytest.raises(MedftError, match="no prepare_report.json"):
        push_dataset(tmp_path, "me/x")


def test_the_card_names_the_dataset_and_shows_no_path(tmp_path):
    raw = tmp_path / "DOE^JOHN_MRN1234567"
    for label, shade in (("benign", 0), ("malignant", 200)):
        (raw / label).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (12, 12), shade + i).save(raw / label / f"{i}.png")
    output = tmp_path / "exported"
    report = prepare_dataset(FolderArguments(output=output, source=raw, num_proc=1, name="scans"))
    card = dataset_card(report, "me/scans-v2")
    assert card.data.pretty_name == "scans" and "The images of `scans`" in card.text
    assert "DOE^JOHN" not in str(card) and str(tmp_path) not in str(card)
    assert "`seed=42`" in card.text and "source=" not in card.text
    assert "Metadata that is not pixels" in card.text and "(0 files had some)" in card.text


def test_an_older_report_that_records_paths_is_not_pushed(brain_multiclass, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(brain_multiclass, old)
    report = read_report(old)
    del report["name"]
    (old / "prepare_report.json").write_text(json.dumps(report | {"source": "/exports/x"}))
    with pytest.raises(MedftError, match="older medft that recorded local paths.*--overwrite"):
        push_dataset(old, "me/x")
