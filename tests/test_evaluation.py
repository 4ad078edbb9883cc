"""The evaluation report on small fixed predictions, against values worked out by hand."""

import json

import numpy as np
import pytest
from PIL import Image

from medft.config import EvaluationOptions
from medft.evaluation.evaluate import CHEXNET_AUROC, EvaluationReport, SplitScores, evaluate_scores
from medft.evaluation.reporting import format_evaluation, write_evaluation
from medft.evaluation.thresholds import Thresholds
from medft.prepare.chestxray14 import FINDINGS as NIH_FINDINGS
from medft.tasks import TaskInfo

BINARY = TaskInfo(["normal", "tumor"], multi_label=False)
FOUR = TaskInfo(["a", "b", "c", "d"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")
FAST = EvaluationOptions(bootstrap_resamples=200, seed=0)


def binary(positive: list[float], labels: list[int], patients=None) -> SplitScores:
    p = np.array(positive)
    return SplitScores(np.stack([1 - p, p], axis=1), np.array(labels), patients)


def test_binary_auroc_auprc_and_sensitivity_at_the_youden_threshold_of_validation():
    validation = binary([0.2, 0.3, 0.45, 0.8], [0, 0, 1, 1])  # Youden: 0.45 separates them
    test = binary([0.1, 0.4, 0.6, 0.35, 0.7, 0.9], [0, 0, 0, 1, 1, 1])
    report = evaluate_scores(
        BINARY, test, split="test", tuning=validation, tuning_split="validation", options=FAST
    ).to_json()
    metrics = report["metrics"]
    assert report["thresholds"]["values"] == {"tumor": pytest.approx(0.45)}
    assert report["thresholds"]["tuned_on"] == "validation"
    assert metrics["auroc"] == pytest.approx(7 / 9)  # 7 of 9 tumour-normal pairs ordered
    assert metrics["auprc"] == pytest.approx((1 + 1 + 3 / 5) / 3)  # precision at each tumour
    assert metrics["sensitivity"] == pytest.approx(2 / 3)  # 0.7, 0.9 >= 0.45; 0.35 missed
    assert metrics["specificity"] == pytest.approx(2 / 3)  # 0.6 >= 0.45 is a false alarm
    assert metrics["accuracy"] == pytest.approx(4 / 6)  # the top class (argmax), as pipeline()
    assert report["per_class"]["tumor"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert report["confusion_matrix"] == [[2, 1], [1, 2]]
    assert report["bootstrap"]["unit"] == "image" and report["patients"] is None
    interval = report["confidence_intervals"]["auroc"]
    assert interval["low"] <= 7 / 9 <= interval["high"] and interval["resamples_used"] <= 200


def test_a_given_threshold_replaces_the_tuned_one():
    test = binary([0.1, 0.4, 0.6, 0.35, 0.7, 0.9], [0, 0, 0, 1, 1, 1])
    options = EvaluationOptions(bootstrap_resamples=0, threshold=0.3)
    report = evaluate_scores(BINARY, test, split="test", tuning=test, options=options).to_json()
    assert report["thresholds"]["method"] == "given"
    assert report["metrics"]["sensitivity"] == 1.0  # every tumour scores >= 0.3
    assert report["metrics"]["specificity"] == pytest.approx(1 / 3)  # only 0.1 is below
    assert report["confidence_intervals"] == {}


def test_multiclass_per_class_top_k_and_confusion_matrix():
    probs = np.array(
        [
            [0.6, 0.2, 0.1, 0.1],  # a, right
            [0.5, 0.3, 0.1, 0.1],  # b, predicted a; b ranks 2nd
            [0.1, 0.2, 0.3, 0.4],  # c, predicted d; c ranks 2nd
            [0.4, 0.3, 0.2, 0.1],  # d, predicted a; d ranks 4th
        ]
    )
    scores = SplitScores(probs, np.array([0, 1, 2, 3]))
    report = evaluate_scores(FOUR, scores, split="test", options=FAST).to_json()
    metrics = report["metrics"]
    assert report["thresholds"] is None  # the top class is the prediction
    assert metrics["accuracy"] == 0.25 and metrics["top_3_accuracy"] == 0.75
    assert "top_5_accuracy" not in metrics  # 5 >= 4 classes: always 1, so left out
    assert metrics["balanced_accuracy"] == 0.25  # recall 1, 0, 0, 0
    # a: precision 1/3, recall 1 -> F1 0.5; b, c, d: never right -> 0
    assert metrics["macro_f1"] == pytest.approx(0.125)
    assert metrics["weighted_f1"] == pytest.approx(0.125)
    assert report["per_class"]["a"] == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1}
    )
    assert report["confusion_matrix"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert "chexnet_comparison" not in report


def test_multilabel_per_finding_thresholds_tuned_on_validation_and_applied_to_test():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.5]])
    scores = SplitScores(probs, labels)
    report = evaluate_scores(
        FINDINGS, scores, split="test", tuning=scores, tuning_split="validation", options=FAST
    ).to_json()
    # F1-max cuts: Mass 0.6 (F1 1); Nodule 0.4 (P 2/3, R 1 -> F1 0.8)
    assert report["thresholds"]["method"] == "f1"
    assert report["thresholds"]["values"] == pytest.approx({"Mass": 0.6, "Nodule": 0.4})
    metrics = report["metrics"]
    assert metrics["auroc_Mass"] == 1.0 and metrics["auroc_Nodule"] == 0.75
    assert metrics["mean_auroc"] == pytest.approx(0.875)
    # all 8 scores pooled: 14.5 of the 16 positive-negative pairs ordered (0.4 ties with 0.4)
    assert metrics["micro_auroc"] == pytest.approx(14.5 / 16)
    assert metrics["macro_f1"] == pytest.approx((1.0 + 0.8) / 2)
    assert metrics["micro_f1"] == pytest.approx(8 / 9)  # TP 4, FP 1, FN 0
    nodule = report["per_finding"]["Nodule"]
    assert nodule["threshold"] == pytest.approx(0.4) and nodule["f1"] == pytest.approx(0.8)
    assert nodule["sensitivity"] == 1.0 and nodule["specificity"] == 0.5
    assert nodule["auprc"] == pytest.approx((1 + 2 / 3) / 2) and nodule["positives"] == 2
    assert "every finding" in report["calibration"]["scored"]


def test_stored_thresholds_are_used_without_a_validation_split():
    scores = SplitScores(np.array([[0.9, 0.3], [0.2, 0.8]]), np.array([[1, 0], [0, 1]]))
    stored = Thresholds({"Mass": 0.95, "Nodule": 0.1}, "f1", "validation")
    report = evaluate_scores(FINDINGS, scores, split="test", stored=stored, options=FAST).to_json()
    assert report["thresholds"]["values"] == {"Mass": 0.95, "Nodule": 0.1}
    assert report["per_finding"]["Mass"]["sensitivity"] == 0.0  # 0.9 < 0.95


def test_patients_are_the_bootstrap_unit_when_known():
    scores = binary([0.2, 0.3, 0.7, 0.8, 0.6, 0.1], [0, 0, 1, 1, 1, 0], np.array(list("aabbcc")))
    report = evaluate_scores(BINARY, scores, split="test", options=FAST).to_json()
    assert report["bootstrap"]["unit"] == "patient" and report["patients"] == 3


def test_nih_models_get_chexnet_beside_them_in_their_own_label_order():
    order = list(reversed(NIH_FINDINGS))
    task = TaskInfo(order, multi_label=True, label_column="labels")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (60, 14))
    scores = SplitScores(np.clip(labels * 0.4 + rng.random((60, 14)) * 0.6, 0, 1), labels)
    report = evaluate_scores(task, scores, split="test", tuning=scores, options=FAST).to_json()
    comparison = report["chexnet_comparison"]
    assert [row["finding"] for row in comparison["rows"]] == order
    hernia = comparison["rows"][0]
    assert hernia["chexnet_auroc"] == 0.9164
    assert hernia["auroc"] == report["per_finding"]["Hernia"]["auroc"]
    assert hernia["ci_low"] <= hernia["auroc"] <= hernia["ci_high"]
    assert comparison["chexnet_mean_auroc"] == pytest.approx(0.841, abs=5e-4)
    assert "different split" in comparison["note"]
    assert "CheXNet" in format_evaluation(EvaluationReport.from_json(report))
    assert sorted(CHEXNET_AUROC) == sorted(NIH_FINDINGS)


def test_every_plot_is_written_as_a_png_beside_metrics_and_thresholds(tmp_path):
    cases = {
        "binary": (BINARY, binary([0.1, 0.4, 0.6, 0.35, 0.7, 0.9], [0, 0, 0, 1, 1, 1])),
        "multiclass": (FOUR, SplitScores(np.eye(4)[[0, 1, 2, 0]] * 0.7 + 0.075, np.arange(4))),
        "multilabel": (
            FINDINGS,
            SplitScores(
                np.array([[0.9, 0.3], [0.2, 0.8], [0.6, 0.4]]), np.array([[1, 0], [0, 1], [1, 1]])
            ),
        ),
    }
    expected = {
        "binary": {
            "thresholds.json",
            "confusion_matrix.png",
            "roc_curves.png",
            "pr_curves.png",
            "reliability_diagram.png",
        },
        "multiclass": {
            "confusion_matrix.png",
            "roc_curves.png",
            "pr_curves.png",
            "reliability_diagram.png",
        },
        "multilabel": {
            "thresholds.json",
            "roc_curves.png",
            "pr_curves.png",
            "reliability_diagram.png",
        },
    }
    for name, (task, scores) in cases.items():
        output = tmp_path / name
        evaluated = evaluate_scores(task, scores, split="test", tuning=scores, options=FAST)
        written = write_evaluation(evaluated, task, scores, output)
        report = evaluated.to_json()
        assert {path.name for path in written} == expected[name] | {"metrics.json"}
        for path in written:
            if path.suffix == ".png":
                with Image.open(path) as image:
                    image.verify()
                    assert image.format == "PNG"
        saved = json.loads((output / "metrics.json").read_text())
        assert saved["metrics"] == pytest.approx(report["metrics"])
        assert set(saved["files"]) == expected[name]
        assert f"to {output}" in format_evaluation(EvaluationReport.from_json(saved), output)


def test_images_without_a_patient_id_are_each_a_patient_of_their_own():
    """Hub datasets, CSVs and older medft datasets can hold missing ids: the bootstrap draws
    each such image alone, never the missing ones pooled into one patient."""
    patients = np.array(["a", "a", None, None, "", "b"], dtype=object)
    scores = binary([0.2, 0.3, 0.7, 0.8, 0.6, 0.1], [0, 0, 1, 1, 1, 0], patients)
    report = evaluate_scores(BINARY, scores, split="test", options=FAST).to_json()
    assert report["bootstrap"]["unit"] == "patient" and report["patients"] == 5
