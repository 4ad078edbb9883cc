"""The task types' metrics on small fixed predictions, against values worked out by hand (see the
comments)."""

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Features, Image, Sequence, Value
from transformers import EvalPrediction, PretrainedConfig

from medft.modeling.families import TRANSFORMERS
from medft.tasks import TaskInfo, auprc_or_none
from medft.training.build import task_metrics

THREE = TaskInfo(["a", "b", "c"], multi_label=False)
BINARY = TaskInfo(["normal", "tumor"], multi_label=False)
MASS_NODULE = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")
MASS_HERNIA = TaskInfo(["Mass", "Hernia"], multi_label=True, label_column="labels")


def test_single_label():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 2, 2, 2]]  # predicts 0, 2, 2, 2
    metrics = THREE.metrics(probs, labels)
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 0 + 1) / 3)  # recall per class
    assert metrics["macro_f1"] == pytest.approx((1 + 0 + 0.8) / 3)  # F1 of class 2: P 2/3, R 1


def test_binary_auroc_sensitivity_specificity():
    labels = np.array([0, 0, 1, 1, 1])
    positive = np.array([0.1, 0.6, 0.7, 0.4, 0.9])
    metrics = BINARY.metrics(np.stack([1 - positive, positive], axis=1), labels)
    assert metrics["sensitivity"] == pytest.approx(2 / 3)  # 0.7 and 0.9 of three tumours
    assert metrics["specificity"] == pytest.approx(1 / 2)  # 0.1 of two normals
    assert metrics["auroc"] == pytest.approx(5 / 6)  # 5 of 6 positive-negative pairs ordered


def test_binary_sensitivity_and_specificity_at_a_threshold():
    labels = np.array([0, 0, 1, 1, 1])
    positive = np.array([0.1, 0.6, 0.7, 0.4, 0.9])
    metrics = BINARY.metrics(np.stack([1 - positive, positive], axis=1), labels, np.array([0.35]))
    assert metrics["sensitivity"] == 1.0  # 0.7, 0.4 and 0.9 reach 0.35
    assert metrics["specificity"] == pytest.approx(1 / 2)  # 0.6 does too
    assert metrics["accuracy"] == pytest.approx(3 / 5)  # still the top class


def test_auprc_is_average_precision_and_undefined_for_one_class():
    # ranked 0.9 (tumour), 0.7 (tumour), 0.6, 0.4 (tumour), 0.1: precision 1, 1, 3/4 at each tumour
    targets, scores = np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.6, 0.7, 0.4, 0.9])
    assert auprc_or_none(targets, scores) == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert auprc_or_none(np.ones(3), np.array([0.1, 0.5, 0.9])) is None


def test_multilabel_per_finding_and_mean_auroc_and_f1():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.5]])
    metrics = MASS_NODULE.metrics(probs, targets)
    assert metrics["auroc_Mass"] == pytest.approx(1.0)
    assert metrics["auroc_Nodule"] == pytest.approx(3 / 4)
    assert metrics["mean_auroc"] == pytest.approx(0.875)
    assert metrics["macro_f1"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["micro_f1"] == pytest.approx(6 / 8)  # TP 3, FP 1, FN 1


def test_a_finding_with_one_class_has_no_auroc():
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    metrics = MASS_HERNIA.metrics(np.full((3, 2), 0.5), targets)
    assert "auroc_Hernia" not in metrics and "auroc_Mass" in metrics


def test_multilabel_f1_with_one_threshold_per_finding():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.5]])
    metrics = MASS_NODULE.metrics(probs, targets, np.array([0.6, 0.4]))
    assert metrics["macro_f1"] == pytest.approx((1.0 + 0.8) / 2)  # Nodule: P 2/3, R 1
    assert metrics["micro_f1"] == pytest.approx(8 / 9)  # TP 4, FP 1, FN 0


def test_probabilities_are_softmax_or_sigmoid():
    logits = np.array([[0.0, np.log(3.0)]])
    assert BINARY.probabilities(logits) == pytest.approx(np.array([[0.25, 0.75]]))
    assert MASS_NODULE.probabilities(logits) == pytest.approx(np.array([[0.5, 0.75]]))


def test_trainer_hook_picks_the_metrics_of_the_task():
    binary = TaskInfo(["normal", "tumor"], multi_label=False)
    prediction = EvalPrediction(
        predictions=np.array([[2.0, 0.0], [0.0, 2.0]]), label_ids=np.array([0, 1])
    )
    assert task_metrics(binary)(prediction)["auroc"] == 1.0
    multi = TaskInfo(["a", "b"], multi_label=True, label_column="labels")
    prediction = EvalPrediction(
        predictions=np.array([[2.0, -2.0], [-2.0, 2.0]]), label_ids=np.eye(2)
    )
    assert task_metrics(multi)(prediction)["mean_auroc"] == 1.0
    assert multi.main_metric == "mean_auroc" and binary.main_metric == "macro_f1"


PREPARED = [
    TaskInfo.prepared(["a", "b", "c"], multi_label=False),
    TaskInfo.prepared(["normal", "tumor"], multi_label=False),
    TaskInfo.prepared(["Mass", "Nodule"], multi_label=True),
]


@pytest.mark.parametrize("task", PREPARED, ids=lambda task: task.task)
def test_a_saved_model_config_gives_the_task_back(task, tmp_path):
    config = PretrainedConfig()
    TRANSFORMERS.set_labels(config, task)  # as the model building sets them
    config.save_pretrained(tmp_path)
    assert TaskInfo.from_model_config(PretrainedConfig.from_pretrained(tmp_path)) == task


@pytest.mark.parametrize("task", PREPARED, ids=lambda task: task.task)
def test_a_prepared_datasets_features_give_the_task_back(task):
    features = Features({"image": Image(), task.label_column: task.label_feature()})
    assert TaskInfo.from_features(features, "image", task.label_column) == task


@pytest.mark.parametrize("task", PREPARED, ids=lambda task: task.task)
def test_the_task_name_a_file_records_gives_the_task_back(task):
    assert TaskInfo.from_name(task.task, task.label_names) == task


def test_features_name_the_label_column_and_its_kind():
    names = ClassLabel(names=["x", "y"])
    features = Features({"scan": Image(), "findings": Sequence(names), "note": Value("string")})
    task = TaskInfo.from_features(features, "scan", "findings")
    assert type(task).__name__ == "MultilabelTask"
    assert (task.image_column, task.label_column) == ("scan", "findings")
    assert TaskInfo.from_features(features, "scan", "note") is None
    assert TaskInfo.from_features(features, "scan", "absent") is None


def test_same_labels_means_the_same_names_in_order_and_the_same_kind():
    three = TaskInfo(["a", "b", "c"], multi_label=False)
    assert three.same_labels(TaskInfo.prepared(["a", "b", "c"], multi_label=False))
    assert three.same_labels(TaskInfo(["a", "b", "c"], False, "scan", "finding"))
    assert not three.same_labels(TaskInfo(["a", "c", "b"], multi_label=False))
    assert not three.same_labels(TaskInfo(["a", "b", "c"], multi_label=True))
    assert not MASS_NODULE.same_labels(MASS_HERNIA)


def test_what_the_kinds_tell_the_rest_of_medft():
    labels = [[0], [1], [0, 1], [], [0]]
    assert MASS_NODULE.label_counts(labels) == {"Mass": 3, "Nodule": 2, "(no finding)": 1}
    assert THREE.label_counts([0, 2, 2]) == {"a": 1, "b": 0, "c": 2}
    assert MASS_NODULE.label_format == "`labels` (a list of class ids)"
    assert THREE.label_format == "`label` (a class id)"
    assert MASS_NODULE.split_strata(labels) is None and THREE.split_strata([2, 0]) == [2, 0]
    assert list(THREE.fold_strata([2, 0, 2], folds=3)) == [2, 0, 2]
    assert MASS_NODULE.loss_targets(np.eye(2)).dtype == torch.float64
    assert THREE.loss_targets(np.array([0, 2])).dtype == torch.int64
    assert MASS_NODULE.supports_per_finding_temperature
    assert not BINARY.supports_per_finding_temperature
    assert THREE.identity == {"labels": ["a", "b", "c"], "multi_label": False}
