"""`medft cv`: one model per fold, the fold table, pooled out-of-fold metrics, the ensemble."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from medft.cli import main
from medft.commands import cv
from medft.config.commands import CvArguments
from medft.data.loading import load_training_data
from medft.errors import MedftError
from medft.evaluation.saved_models import split_scores
from medft.inference.classifier import load_members
from tests.helpers import FIXTURES, on_two_cpu_processes

FOLDS = 3


@pytest.fixture(scope="module")
def cross_validated(brain_binary, tmp_path_factory):
    output = tmp_path_factory.mktemp("cv") / "run"
    overrides = ["--dataset_name", str(brain_binary), "--output_dir", str(output)]
    return cv.cross_validate(
        CvArguments(recipe=FIXTURES / "tiny_timm.yaml", overrides=overrides, folds=FOLDS)
    )


def test_every_fold_is_a_model_folder_and_the_summary_adds_up(cross_validated, brain_binary):
    result = cross_validated
    dataset, _ = load_training_data(str(brain_binary))
    pooled = len(dataset["train"]) + len(dataset["validation"])
    assert [fold.folder.name for fold in result.folds] == ["fold-0", "fold-1", "fold-2"]
    for fold in result.folds:
        assert (fold.folder / "model.safetensors").is_file()
        assert fold.sizes["train"] + fold.sizes["validation"] == pooled
        assert fold.sizes["test"] == len(dataset["test"])  # the test split, untouched
    assert sum(len(fold.held_out.labels) for fold in result.folds) == pooled
    assert result.out_of_fold.images == pooled and result.out_of_fold.split == "out-of-fold"
    aurocs = [fold.metrics["auroc"] for fold in result.folds]
    assert result.summary()["auroc"]["mean"] == pytest.approx(np.mean(aurocs))
    assert result.summary()["auroc"]["sd"] == pytest.approx(np.std(aurocs, ddof=1))
    with (result.output / "folds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["auroc"]) for row in rows] == pytest.approx(aurocs, abs=5e-7)  # 6 digits
    summary = json.loads((result.output / "cv_summary.json").read_text())
    assert summary["folds"] == FOLDS and summary["ensemble_test"]["auroc"] == pytest.approx(
        result.ensemble.metrics["auroc"]
    )
    for name in (
        "fold_metrics.png",
        "ensemble/metrics.json",
        "ensemble/thresholds.json",
        "out-of-fold/metrics.json",
    ):
        assert (result.output / name).is_file(), name
    text = cv.format_cv(result)
    assert "mean +- sd" in text and "Fold ensemble on the test split" in text
    assert f"--model '{result.output}/fold-*'" in text  # quoted, or the shell expands it


def test_the_ensemble_is_the_mean_of_its_members(cross_validated, brain_binary):
    dataset, task = load_training_data(str(brain_binary))
    folders = [fold.folder for fold in cross_validated.folds]
    members = [split_scores(load_members([f]), dataset["test"], task, 16, 0)[0] for f in folders]
    ensemble = cv.ensemble_scores(folders, dataset["test"], task, 16)
    assert ensemble.probs == pytest.approx(np.mean([m.probs for m in members], axis=0))
    assert cross_validated.ensemble.members == [f.name for f in folders]  # names, not paths


def test_a_rerun_skips_the_finished_folds(cross_validated, brain_binary, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(cv, "train", no_training)
    overrides = ["--dataset_name", str(brain_binary), "--output_dir", str(cross_validated.output)]
    again = cv.cross_validate(
        CvArguments(recipe=FIXTURES / "tiny_timm.yaml", overrides=overrides, folds=FOLDS)
    )
    assert [f.metrics for f in again.folds] == [f.metrics for f in cross_validated.folds]
    assert again.ensemble.metrics == pytest.approx(cross_validated.ensemble.metrics)


def test_predict_averages_the_fold_models(cross_validated, brain_raw, tmp_path, capsys):
    folders = [str(fold.folder) for fold in cross_validated.folds]
    scans = sorted((brain_raw / "_NORMAL T1").glob("*.jp*g"))[:3]
    thresholds = cross_validated.output / "ensemble" / "thresholds.json"
    pattern = str(cross_validated.output / "fold-*")  # as a user quotes it: --model 'cv/fold-*'
    code = main(
        [
            "predict",
            "--model",
            pattern,
            "--thresholds",
            str(thresholds),
            *map(str, scans),
            "--output",
            str(tmp_path / "p.csv"),
            "--num-workers",
            "0",
        ]
    )
    assert code == 0 and "an ensemble of 3" in capsys.readouterr().out
    single = [
        main(
            [
                "predict",
                "--model",
                folder,
                *map(str, scans),
                "--output",
                str(tmp_path / f"{k}.csv"),
                "--num-workers",
                "0",
            ]
        )
        for k, folder in enumerate(folders)
    ]
    assert single == [0, 0, 0]

    def tumour_scores(path):
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        return [
            float(r["score_1"]) if r["label_1"] == "tumor" else 1 - float(r["score_1"])
            for r in rows
        ]

    members = np.mean([tumour_scores(tmp_path / f"{k}.csv") for k in range(3)], axis=0)
    assert tumour_scores(tmp_path / "p.csv") == pytest.approx(members, abs=1e-5)


def test_each_fold_runs_under_accelerate_as_one_training_does(brain_binary, tmp_path):
    """`accelerate launch -m medft.cli cv`: two processes share each fold's epochs; the held-out
    predictions are gathered from both, and only the main process writes and prints the
    summaries."""
    output = tmp_path / "cv"
    result = on_two_cpu_processes(
        "-m", "medft.cli", "cv", str(FIXTURES / "tiny_timm.yaml"), "--folds", "2",
        "--dataset_name", str(brain_binary), "--output_dir", str(output), timeout=900,
    )  # fmt: skip
    dataset, _ = load_training_data(str(brain_binary))
    summary = json.loads((output / "cv_summary.json").read_text())
    assert [fold["validation"] for fold in summary["per_fold"]] == [
        len(np.load(output / f"fold-{k}" / cv.HELD_OUT)["labels"]) for k in range(2)
    ]
    assert sum(fold["validation"] for fold in summary["per_fold"]) == (
        len(dataset["train"]) + len(dataset["validation"])
    )
    for fold in summary["per_fold"]:
        state = json.loads((output / f"fold-{fold['fold']}" / "trainer_state.json").read_text())
        steps_one_process = -(-fold["train"] // 16)
        assert state["global_step"] == -(-steps_one_process // 2)  # each epoch shared by two
    assert summary["ensemble_test"]["auroc"] >= 0
    assert (output / "ensemble" / "metrics.json").is_file()
    assert result.stdout.count("Cross-validation: 2 folds") == 1  # the main process reports


def test_folds_of_another_cross_validation_are_refused_and_overwrite_replaces_them(
    cross_validated, brain_binary, tmp_path, capsys
):
    """A rerun with other --folds no longer mixes old folds into the out-of-fold pool."""
    output = tmp_path / "cv"
    shutil.copytree(cross_validated.output, output)
    overrides = ["--dataset_name", str(brain_binary), "--output_dir", str(output)]
    code = main(["cv", str(FIXTURES / "tiny_timm.yaml"), "--folds", "2", *overrides])
    error = capsys.readouterr().err
    assert code == 2 and "fold-0: differs in: --folds 2 (was 3)" in error
    assert "pass --overwrite to train the folds again, or choose a new --output" in error
    assert len(error.strip().splitlines()) == 1

    again = cv.cross_validate(
        CvArguments(
            recipe=FIXTURES / "tiny_timm.yaml", overrides=overrides, folds=2, overwrite=True
        )
    )
    dataset, _ = load_training_data(str(brain_binary))
    pool = len(dataset["train"]) + len(dataset["validation"])
    assert again.out_of_fold.images == pool and len(again.folds) == 2
    assert sorted(path.name for path in output.glob("fold-*")) == ["fold-0", "fold-1"]
    with pytest.raises(MedftError, match=r"differs in: --folds 3 \(was 2\)"):
        cv.cross_validate(
            CvArguments(recipe=FIXTURES / "tiny_timm.yaml", overrides=overrides, folds=3)
        )
    with pytest.raises(MedftError, match=r"differs in: seed \(now 7\)"):
        cv.cross_validate(
            CvArguments(
                recipe=FIXTURES / "tiny_timm.yaml", overrides=[*overrides, "--seed", "7"], folds=2
            )
        )


def test_a_truncated_fold_marker_trains_that_fold_again(cross_validated, brain_binary, tmp_path):
    """A kill while cv_fold.json was written: that fold did not finish (it resumes from its
    checkpoints), the others are read back, and the log says so from its first line."""
    output = tmp_path / "cv"
    shutil.copytree(cross_validated.output, output)
    marker = output / "fold-1" / cv.FOLD_RESULT
    marker.write_text(marker.read_text()[:20])
    command = [sys.executable, "-m", "medft.cli", "cv", str(FIXTURES / "tiny_timm.yaml"),
               "--folds", str(FOLDS), "--dataset_name", str(brain_binary),
               "--output_dir", str(output)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Fold 0 of {FOLDS} finished before" in result.stdout
    assert f"{marker} cannot be read: fold 1 did not finish" in result.stdout
    assert f"Resuming from {output / 'fold-1' / 'checkpoint-'}" in result.stdout
    assert json.loads(marker.read_text())["folds"] == FOLDS
