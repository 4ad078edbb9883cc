from medft.cli import main


def test_demo_runs_the_whole_job(tmp_path, capsys):
    """`medft demo`, shrunk to a minute: generate, prepare, fine-tune, evaluate, explain."""
    output = tmp_path / "demo"
    code = main(["demo", "--output", str(output), "--per-class", "5",
                 "--num_train_epochs", "1", "--image_size", "32"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 unreadable files skipped" in printed
    assert "Test metrics:" in printed and "accuracy" in printed
    assert f'pipeline("image-classification", model="{output / "model"}")' in printed
    assert (output / "model" / "model.safetensors").is_file()
    assert (output / "dataset" / "prepare_report.json").is_file()
