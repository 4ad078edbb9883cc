"""Reliability bins and ECE against values worked out by hand."""

import numpy as np
import pytest

from medft.evaluation.calibration import reliability, reliability_bins
from medft.tasks import CalibrationScores, TaskInfo

BINARY = TaskInfo(["a", "b"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")


def test_single_label_uses_the_top_class_probability():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])  # right, wrong, right, right
    bins = reliability(probs, labels, BINARY, bins=10)
    assert bins.counts[9] == 2 and bins.counts[5] == 2 and bins.counts.sum() == 4
    assert bins.mean_score[9] == pytest.approx(0.95) and bins.fraction_true[9] == 0.5
    assert bins.mean_score[5] == pytest.approx(0.55) and bins.fraction_true[5] == 1.0
    assert bins.ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert "top-class" in bins.scored


def test_multi_label_counts_every_findings_probability():
    probs = np.array([[0.9, 0.1], [0.7, 0.3]])
    targets = np.array([[1, 0], [0, 0]])
    bins = reliability(probs, targets, FINDINGS, bins=10)
    assert bins.counts.sum() == 4  # 2 images x 2 findings
    # bins 9 (0.9, true), 1 (0.1, false), 7 (0.7, false), 3 (0.3, false)
    assert bins.ece == pytest.approx((0.1 + 0.1 + 0.7 + 0.3) / 4)
    assert "every finding" in bins.scored


def test_edges_are_equal_width_and_a_score_of_one_lands_in_the_last_bin():
    scored = CalibrationScores(np.array([0.0, 1.0, 0.5]), np.array([0, 1, 1]), "scores", "x", "y")
    bins = reliability_bins(scored, 4)
    assert bins.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert bins.counts.tolist() == [1, 0, 1, 1]
    assert bins.ece == pytest.approx(0.5 / 3)  # only the 0.5 scored bin misses, by 0.5
    saved = bins.to_json()
    assert saved["mean_score"][1] is None and saved["counts"] == [1, 0, 1, 1]
