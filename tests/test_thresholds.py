"""Decision thresholds: Youden's J and F1 on small hand-worked scores, and thresholds.json."""

import json

import numpy as np
import pytest

from medft.errors import MedftError
from medft.evaluation.thresholds import (
    f1_threshold,
    load_thresholds,
    save_thresholds,
    tune_thresholds,
    youden_threshold,
)
from medft.tasks import TaskInfo

BINARY = TaskInfo(["normal", "tumor"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule", "Hernia"], multi_label=True, label_column="labels")


def test_youden_picks_the_cut_with_the_best_sensitivity_plus_specificity():
    targets = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.2, 0.3, 0.45, 0.8, 0.7, 0.6])
    # J = sensitivity + specificity - 1 at each cut: 0.8: 1/3 + 1 - 1 = 0.33; 0.7: 0;
    # 0.6: 2/3 + 2/3 - 1 = 0.33; 0.45: 1 + 2/3 - 1 = 0.67 (the best); 0.3: 0.33
    assert youden_threshold(targets, scores) == pytest.approx(0.45)
    assert youden_threshold(np.array([1, 1]), np.array([0.2, 0.9])) is None


def test_f1_picks_the_cut_with_the_best_f1():
    targets = np.array([0, 1, 1, 0])
    scores = np.array([0.3, 0.8, 0.4, 0.5])
    # cut 0.3: F1 2/3; 0.4: P 2/3, R 1 -> 0.8; 0.5: P 1/2, R 1/2 -> 0.5; 0.8: P 1, R 1/2 -> 2/3
    assert f1_threshold(targets, scores) == pytest.approx(0.4)
    assert f1_threshold(np.array([0, 0]), np.array([0.2, 0.9])) is None


def test_each_finding_gets_its_own_threshold_and_undefined_ones_stay_at_one_half():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.3, 0.1], [0.2, 0.8, 0.2], [0.6, 0.4, 0.3], [0.4, 0.5, 0.4]])
    thresholds = tune_thresholds(FINDINGS, probs, labels, "auto", "validation")
    assert thresholds.method == "f1" and thresholds.tuned_on == "validation"
    assert thresholds.values == pytest.approx({"Mass": 0.6, "Nodule": 0.4, "Hernia": 0.5})
    assert thresholds.defaulted == ["Hernia"]  # no positive on the validation split


def test_binary_tunes_the_positive_class_and_multiclass_needs_none():
    probs = np.array([[0.8, 0.2], [0.7, 0.3], [0.55, 0.45], [0.2, 0.8]])
    thresholds = tune_thresholds(BINARY, probs, np.array([0, 0, 1, 1]), "auto", "validation")
    assert thresholds.method == "youden" and thresholds.values == {"tumor": pytest.approx(0.45)}
    three = TaskInfo(["a", "b", "c"], multi_label=False)
    assert tune_thresholds(three, np.eye(3), np.arange(3), "auto", "validation") is None


def test_thresholds_json_round_trips_and_must_match_the_models_labels(tmp_path):
    labels = np.array([[1, 0, 0], [0, 1, 1]])
    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.7, 0.8]])
    thresholds = tune_thresholds(FINDINGS, probs, labels, "youden", "validation")
    path = save_thresholds(thresholds, FINDINGS, tmp_path / "thresholds.json")
    saved = json.loads(path.read_text())
    assert saved["labels"] == ["Mass", "Nodule", "Hernia"] and saved["method"] == "youden"
    assert load_thresholds(path, FINDINGS).values == thresholds.values
    with pytest.raises(MedftError, match="but the model predicts tumor"):
        load_thresholds(path, BINARY)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(MedftError, match="not a thresholds file"):
        load_thresholds(tmp_path / "broken.json", FINDINGS)
