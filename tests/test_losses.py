"""Losses against hand computations on a small batch (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest
import torch

from medft.tasks import TaskInfo
from medft.training.losses import build_loss

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
