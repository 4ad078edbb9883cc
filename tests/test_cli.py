import subprocess
import sys

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
    assert err.strip().splitlines() == [f"medft: error: --source {tmp_path / 'nope'} does not "
                                        "exist; check the path."]  # fmt: skip


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
