import json
import subprocess
import sys

import pytest
from datasets import load_from_disk

from medft.cli import main


def test_prepare_prints_a_summary(brain_raw, tmp_path, capsys):
    output = tmp_path / "out"
    code = main(["prepare", "brain-tumor-44c", "--source", str(brain_raw), "--output", str(output),
                 "--task", "binary", "--num-proc", "1"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Prepared brain-tumor-44c (binary, 2 classes)" in printed
    assert "normal" in printed and "skipped: 3" in printed
    assert load_from_disk(str(output))["train"].features["label"].names == ["normal", "tumor"]


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys):
    code = main(["prepare", "folder", "--source", str(tmp_path / "nope"), "--output", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"medft: error: --source {tmp_path / 'nope'} does not exist; check the path."
    ]


def test_synthesize_both_layouts(tmp_path, capsys):
    assert main(["synthesize", "brain-tumor-44c", str(tmp_path / "b"), "--per-class", "2"]) == 0
    assert (tmp_path / "b" / "_NORMAL T2").is_dir()
    assert main(["synthesize", "chestxray14", str(tmp_path / "n"), "--patients", "5"]) == 0
    assert (tmp_path / "n" / "Data_Entry_2017.csv").is_file()
    assert list((tmp_path / "n").glob("images_00*/images/*.png"))


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "medft.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "prepare" in result.stdout and "synthesize" in result.stdout


def test_evaluate_reports_the_numbers_of_the_training_run(
    trained_binary, brain_binary, tmp_path, capsys
):
    code = main(["evaluate", "--model", str(trained_binary), "--dataset", str(brain_binary),
                 "--output", str(tmp_path), "--bootstrap-resamples", "100"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "95% CI (100 image resamples)" in printed and "youden, tuned on validation" in printed
    ours = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((trained_binary / "metrics.json").read_text())
    assert ours["metrics"] == pytest.approx(trained["metrics"], abs=1e-6)
    assert ours["thresholds"]["values"] == pytest.approx(trained["thresholds"]["values"], abs=1e-6)
    for name, interval in trained["confidence_intervals"].items():
        assert ours["confidence_intervals"][name] == pytest.approx(interval, abs=1e-6), name
    card = (trained_binary / "README.md").read_text()
    assert f"| auroc | {ours['metrics']['auroc']:.4f} |" in card
    assert "model-index" in card


def test_predict_and_explain_print_one_screen_summaries(
    trained_multilabel, nih_raw, tmp_path, capsys
):
    images = [str(p) for p in sorted(nih_raw.glob("images_00*/images/*.png"))[:3]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n")
    output = tmp_path / "predictions.csv"
    code = main(["predict", "--model", str(trained_multilabel), *images, str(broken),
                 "--output", str(output), "--num-workers", "0"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Scored 4 image(s)" in printed and "unreadable: 1" in printed
    assert str(broken) in printed and output.is_file()
    code = main(["explain", "--model", str(trained_multilabel), *images, str(broken),
                 "--output", str(tmp_path / "maps")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Explained 3 image(s) (Grad-CAM on timm_model.layer3)" in printed
    assert len(list((tmp_path / "maps").glob("*.png"))) == 3


def test_evaluating_on_data_with_other_labels_is_a_one_line_error(
    trained_binary, nih_prepared, capsys
):
    code = main(["evaluate", "--model", str(trained_binary), "--dataset", str(nih_prepared)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicts binary labels normal, tumor" in err[0]
