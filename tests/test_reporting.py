from medft.evaluation.reporting import format_run_summary
from tests.helpers import binary_report


def test_run_summary_shows_metrics_and_how_to_use():
    summary = format_run_summary("outputs/x", None, {"test_accuracy": 0.9, "test_loss": 0.2})
    assert "accuracy             0.9000" in summary and "loss" not in summary.split("Model")[0]
    assert 'pipeline("image-classification", model="outputs/x")' in summary


def test_run_summary_shows_the_evaluation_when_there_is_one(tmp_path):
    report = binary_report()
    summary = format_run_summary(tmp_path, report, {"test_accuracy": 0.1234})
    assert "Test metrics:" in summary and "auroc" in summary and "95% CI" in summary
    assert "0.1234" not in summary  # the evaluation's numbers, not the Trainer's
    assert f"medft predict --model {tmp_path}" in summary
