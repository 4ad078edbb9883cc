"""The training label prevalence saved with a model, and the prior shift that adapts its scores to
a site whose prevalence differs: checked on generated data with a known shift."""

import json

import numpy as np
import pytest

from medft.errors import MedftError
from medft.evaluation.priors import (
    TRAINING_LABELS_NAME,
    prevalence,
    prior_shift,
    save_training_labels,
    training_prevalence,
)
from tests.helpers import FINDINGS, THREE


def bayes_logits(features: np.ndarray, means: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """The logits of the Bayes classifier for unit-variance Gaussian classes at ``means`` under
    the training ``priors``: what a well-calibrated model trained on them outputs."""
    return -0.5 * ((features[:, None, :] - means[None]) ** 2).sum(-1) + np.log(priors)


def test_the_shift_moves_the_mean_predicted_prevalence_to_the_local_one(tmp_path):
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    training = np.array([1 / 3, 1 / 3, 1 / 3])
    save_training_labels(tmp_path, THREE, [0, 1, 2] * 1000)
    local = np.array([0.7, 0.2, 0.1])  # a site where the first class is common
    labels = rng.choice(3, 4000, p=local)
    features = means[labels] + rng.normal(0, 1, (4000, 2))
    logits = bayes_logits(features, means, training)

    shift = prior_shift(THREE, tmp_path, list(labels))
    before = THREE.probabilities(logits).mean(0)
    after = THREE.probabilities(logits + shift.shift).mean(0)
    assert np.abs(after - local).max() < 0.02 < np.abs(before - local).max()
    assert np.all(np.abs(after - local) < np.abs(before - local))
    assert shift.shift == pytest.approx(np.log(shift.local / shift.training))


def test_each_finding_shifts_to_its_local_prevalence(tmp_path):
    rng = np.random.default_rng(1)
    training, local = np.array([0.5, 0.2]), np.array([0.15, 0.45])
    trained_on = [[0] * (i < 500) + [1] * (i % 5 == 0) for i in range(1000)]
    save_training_labels(tmp_path, FINDINGS, trained_on)
    present = rng.random((4000, 2)) < local
    signal = rng.normal(0, 1, (4000, 2)) + 1.5 * present  # per finding: N(0, 1) or N(1.5, 1)
    logits = 1.5 * signal - 1.125 + np.log(training / (1 - training))  # the Bayes log-odds

    shift = prior_shift(FINDINGS, tmp_path, [list(np.flatnonzero(row)) for row in present])
    before = FINDINGS.probabilities(logits).mean(0)
    after = FINDINGS.probabilities(logits + shift.shift).mean(0)
    assert np.abs(after - local).max() < 0.02 < np.abs(before - local).max()
    assert shift.to_json(FINDINGS)["Mass"]["logit_shift"] < 0 < shift.shift[1]


def test_the_training_counts_are_saved_per_label(tmp_path):
    save_training_labels(tmp_path, FINDINGS, [[0], [], [0, 1], [], [], [1], [0], [0, 1], [0], []])
    content = json.loads((tmp_path / TRAINING_LABELS_NAME).read_text())
    assert content["counts"] == {"Mass": 5, "Nodule": 3, "(no finding)": 4}
    assert content["images"] == 10 and content["labels"] == ["Mass", "Nodule"]
    assert training_prevalence(tmp_path, FINDINGS) == pytest.approx([5.5 / 11, 3.5 / 11])


def test_a_label_the_sample_lacks_still_shifts_by_a_finite_amount(tmp_path):
    assert prevalence(THREE, {"benign": 0, "malignant": 3, "normal": 7}, 10) == pytest.approx(
        [0.5 / 11, 3.5 / 11, 7.5 / 11]
    )
    save_training_labels(tmp_path, THREE, [0, 1, 2] * 5)
    assert np.all(np.isfinite(prior_shift(THREE, tmp_path, [1, 2, 2]).shift))


def test_a_model_without_the_training_prevalence_is_one_line(tmp_path):
    with pytest.raises(MedftError, match="models trained by an older medft lack it"):
        training_prevalence(tmp_path, THREE)
    save_training_labels(tmp_path, FINDINGS, [[0]])
    with pytest.raises(MedftError, match="counts the labels Mass, Nodule, not the model's"):
        training_prevalence(tmp_path, THREE)
    (tmp_path / TRAINING_LABELS_NAME).write_text("[]")
    with pytest.raises(MedftError, match="is not a training_labels.json written by medft"):
        training_prevalence(tmp_path, THREE)
