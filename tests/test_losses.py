"""Losses against hand computations on a small batch (the arithmetic is in the comments), and
the published formulas of focal and asymmetric losses computed element by element."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from timm.loss import AsymmetricLossMultiLabel

from medft.config.losses import LossOptions
from medft.errors import MedftError
from medft.parsing import parse_recipe
from medft.tasks import TaskInfo
from medft.training.losses import build_loss
from tests.helpers import run_recipe

THREE = TaskInfo(["a", "b", "c"], multi_label=False)
TWO_FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")


def test_balanced_class_weights():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])  # counts 4, 2, 2 of 8
    weights = THREE.balanced_weights(labels)
    assert weights.tolist() == pytest.approx([8 / (3 * 4), 8 / (3 * 2), 8 / (3 * 2)])
    assert THREE.balanced_weights(np.array([0, 0, 2]))[1] == 0  # a class never seen


def test_weighted_cross_entropy_matches_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1])
    loss = build_loss(THREE, [0, 0, 0, 0, 1, 1, 2, 2], "balanced", 0.0)(logits, labels)
    w0, w1 = 8 / 12, 8 / 6
    nll0 = -math.log(math.exp(2) / (math.exp(2) + 2))  # -log softmax of the true class
    nll1 = -math.log(math.e / (math.e + 2))
    assert loss.item() == pytest.approx((w0 * nll0 + w1 * nll1) / (w0 + w1))


def test_multilabel_pos_weight_matches_a_hand_computation():
    train = [[0], [0, 1], [], []]  # Mass 2 of 4, Nodule 1 of 4
    assert TWO_FINDINGS.balanced_weights(np.array([[1, 0], [1, 1], [0, 0], [0, 0]])).tolist() == [
        1.0,
        3.0,
    ]
    loss = build_loss(TWO_FINDINGS, train, "balanced", 0.0)
    logits = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0]])
    # BCE with pos_weight p on a positive: -p * log(sigmoid(0)) = p * log 2; mean of (1, 3)
    assert loss(logits, targets).item() == pytest.approx((1 * math.log(2) + 3 * math.log(2)) / 2)


def test_soft_targets_and_label_smoothing():
    loss = build_loss(THREE, [0, 1, 2], "none", 0.0)
    logits = torch.zeros(1, 3)
    assert loss(logits, torch.tensor([[0.5, 0.5, 0.0]])).item() == pytest.approx(math.log(3))
    smoothed = build_loss(THREE, [0, 1, 2], "none", 0.3)
    logits = torch.tensor([[5.0, 0.0, 0.0]])
    target = torch.tensor([0.8, 0.1, 0.1])  # 0.7 one-hot + 0.3 spread over 3 classes
    expected = -(target * torch.log_softmax(logits, -1)).sum()
    assert smoothed(logits, torch.tensor([0])).item() == pytest.approx(expected.item())


def test_sampling_weights_balance_classes():
    weights = TaskInfo(["a", "b"], multi_label=False).sampling_weights(np.array([0, 0, 0, 1]))
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    draws = torch.multinomial(
        weights, 20000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    assert (draws == 3).float().mean().item() == pytest.approx(0.5, abs=0.02)
    multi = TWO_FINDINGS.sampling_weights(np.array([[1, 0], [1, 0], [1, 1], [0, 0]]))
    assert multi.tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])  # rarest finding; none: 1/1


# focal and asymmetric losses: the published formulas, computed here element by element


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(value) for value in row]
    return [value / sum(exps) for value in exps]


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


LOGITS = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.2, -1.0]]
FOCAL = LossOptions(loss="focal", focal_gamma=2.0)


def test_softmax_focal_loss_is_lin_et_als_with_class_weights_as_alpha():
    train = [0, 0, 0, 0, 1, 1, 2, 2]  # balanced weights 8/12, 8/6, 8/6
    weights = [8 / 12, 8 / 6, 8 / 6]
    labels = [0, 1, 2]
    loss = build_loss(THREE, train, "balanced", 0.0, FOCAL)
    # FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), averaged over the images' alpha_t
    terms = [
        -weights[y] * (1 - softmax(row)[y]) ** 2 * math.log(softmax(row)[y])
        for row, y in zip(LOGITS, labels)
    ]
    expected = sum(terms) / sum(weights[y] for y in labels)
    assert loss(torch.tensor(LOGITS), torch.tensor(labels)).item() == pytest.approx(expected)
    unweighted = build_loss(THREE, train, "none", 0.0, FOCAL)
    terms = [-((1 - softmax(r)[y]) ** 2) * math.log(softmax(r)[y]) for r, y in zip(LOGITS, labels)]
    assert unweighted(torch.tensor(LOGITS), torch.tensor(labels)).item() == pytest.approx(
        sum(terms) / 3
    )


def test_focal_loss_with_gamma_zero_is_the_tasks_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=generator)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    soft = torch.softmax(torch.randn(6, 3, generator=generator), -1)  # mixed targets
    flat = LossOptions(loss="focal", focal_gamma=0.0)
    train = [0, 0, 0, 1, 2, 2]
    for weighting, smoothing in (("none", 0.0), ("balanced", 0.0), ("balanced", 0.2)):
        focal = build_loss(THREE, train, weighting, smoothing, flat)
        cross_entropy = build_loss(THREE, train, weighting, smoothing)
        for targets in (labels, soft):
            assert focal(logits, targets).item() == pytest.approx(
                cross_entropy(logits, targets).item()
            )
    findings = torch.randn(6, 2, generator=generator)
    hits = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    for weighting, smoothing in (("none", 0.0), ("balanced", 0.0), ("none", 0.1)):
        focal = build_loss(TWO_FINDINGS, [[0], [0, 1], [], []], weighting, smoothing, flat)
        bce = build_loss(TWO_FINDINGS, [[0], [0, 1], [], []], weighting, smoothing)
        assert focal(findings, hits).item() == pytest.approx(bce(findings, hits).item())


def test_sigmoid_focal_loss_is_lin_et_als_per_finding():
    logits = [[1.0, -2.0], [0.5, 0.0]]
    targets = [[1.0, 0.0], [0.0, 1.0]]
    alpha = dataclasses.replace(FOCAL, focal_alpha=0.25)
    loss = build_loss(TWO_FINDINGS, [[0]], "none", 0.0, alpha)
    terms = []
    for row, truth in zip(logits, targets):
        for value, t in zip(row, truth):
            p = sigmoid(value)
            p_t, alpha_t = (p, 0.25) if t else (1 - p, 0.75)
            terms.append(-alpha_t * (1 - p_t) ** 2 * math.log(p_t))
    assert loss(torch.tensor(logits), torch.tensor(targets)).item() == pytest.approx(
        sum(terms) / len(terms)
    )


ASYMMETRIC = LossOptions(loss="asymmetric", asl_gamma_neg=4.0, asl_gamma_pos=1.0, asl_clip=0.05)


def test_asymmetric_loss_is_ridnik_et_als_averaged():
    logits = [[1.0, -2.0, 3.0], [0.5, 0.0, -0.3]]
    targets = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    terms = []
    for row, truth in zip(logits, targets):
        for value, y in zip(row, truth):
            p = sigmoid(value)
            if y:  # L+ = (1 - p)^gamma+ log(p)
                terms.append(-((1 - p) ** 1.0) * math.log(p))
            else:  # L- = p_m^gamma- log(1 - p_m), p_m = max(p - m, 0)
                shifted = max(p - 0.05, 0.0)
                terms.append(-(shifted**4.0) * math.log(1 - shifted))
    findings = TaskInfo(["a", "b", "c"], multi_label=True, label_column="labels")
    loss = build_loss(findings, [[0]], "none", 0.0, ASYMMETRIC)
    assert loss(torch.tensor(logits), torch.tensor(targets)).item() == pytest.approx(
        sum(terms) / len(terms)
    )
    # timm's AsymmetricLossMultiLabel, the reference implementation, sums over findings
    reference = AsymmetricLossMultiLabel(gamma_neg=4.0, gamma_pos=1.0, clip=0.05, reduction="sum")
    assert reference(torch.tensor(logits), torch.tensor(targets)).item() == pytest.approx(
        sum(terms)
    )


def test_asymmetric_loss_without_focusing_or_margin_is_binary_cross_entropy():
    flat = LossOptions(loss="asymmetric", asl_gamma_neg=0.0, asl_gamma_pos=0.0, asl_clip=0.0)
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.1], [-0.5, 0.7]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    train = [[0], [0, 1], [], []]
    for weighting, smoothing in (("none", 0.0), ("balanced", 0.0), ("balanced", 0.1)):
        asl = build_loss(TWO_FINDINGS, train, weighting, smoothing, flat)
        bce = build_loss(TWO_FINDINGS, train, weighting, smoothing)
        assert asl(logits, targets).item() == pytest.approx(bce(logits, targets).item())


@pytest.mark.parametrize(
    "options,message",
    [
        (ASYMMETRIC, "loss: asymmetric (ASL) focuses each finding's positives and negatives"),
        (dataclasses.replace(FOCAL, focal_alpha=0.25), "weigh its classes with class_weighting"),
    ],
)
def test_a_loss_a_single_label_task_cannot_train_with_is_refused_in_one_line(options, message):
    with pytest.raises(MedftError) as error:
        build_loss(THREE, [0, 1, 2], "none", 0.0, options)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"loss": "dice"}, "loss must be one of cross_entropy, focal, asymmetric, got 'dice'"),
        ({"loss": "focal", "focal_gamma": -1}, "focal_gamma must not be negative, got -1"),
        ({"asl_gamma_neg": -0.5}, "asl_gamma_neg must not be negative"),
        ({"loss": "asymmetric", "asl_clip": 1.0}, "asl_clip must be in [0, 1), got 1.0"),
        ({"focal_alpha": 0.25}, "focal_alpha is a setting of loss: focal, not of 'cross_entropy'"),
        ({"loss": "focal", "focal_alpha": 1.5}, "focal_alpha must be in [0, 1], got 1.5"),
        (
            {"loss": "focal", "focal_alpha": 0.25, "class_weighting": "balanced"},
            "focal_alpha and class_weighting: balanced both weigh",
        ),
    ],
)
def test_loss_keys_are_checked_when_the_recipe_is_read(values, message):
    required = {"model_name_or_path": "vit", "dataset_name": "d", "output_dir": "o"}
    with pytest.raises(MedftError) as error:
        parse_recipe(values={**required, **values})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_training_with_focal_and_asymmetric_losses(brain_binary, nih_prepared, tmp_path):
    run_recipe("tiny_vit.yaml", brain_binary, tmp_path / "focal", "--loss", "focal",
               "--class_weighting", "balanced", "--focal_gamma", "1.5")  # fmt: skip
    run_recipe("tiny_vit.yaml", nih_prepared, tmp_path / "asl", "--loss", "asymmetric")
    for name, loss in (("focal", "focal"), ("asl", "asymmetric")):
        settings = json.loads((tmp_path / name / "training_args.json").read_text())
        assert settings["loss"] == loss
        assert f"| loss | {loss} |" in (tmp_path / name / "README.md").read_text()
    assert "| focal_gamma | 1.5 |" in (tmp_path / "focal" / "README.md").read_text()
    with pytest.raises(MedftError, match="loss: asymmetric"):
        run_recipe("tiny_vit.yaml", brain_binary, tmp_path / "refused", "--loss", "asymmetric")
