"""Bootstrap metrics from per-image weights equal scikit-learn's on the drawn images."""

from __future__ import annotations

import numpy as np
import pytest

from medft.tasks import TaskInfo

NAMES = ["Atelectasis", "Cardiomegaly", "Effusion", "Hernia"]


def cases():
    rng = np.random.default_rng(0)
    n = 60
    scores = np.round(rng.random((n, 5)), 1)  # ties on purpose
    probs = scores / scores.sum(axis=1, keepdims=True)
    yield TaskInfo([f"c{i}" for i in range(5)], False), probs, rng.integers(0, 5, n), None
    two = np.stack([1 - scores[:, 0], scores[:, 0]], axis=1)
    binary = TaskInfo(["normal", "tumor"], False)
    yield binary, two, rng.integers(0, 2, n), None
    yield binary, two, (rng.random(n) < 0.1).astype(int), np.array([0.35])
    findings = (rng.random((n, 4)) < [0.3, 0.1, 0.5, 0.03]).astype(np.float32)
    multi = TaskInfo(NAMES, True, label_column="labels")
    yield multi, np.round(rng.random((n, 4)), 2), findings, np.array([0.5, 0.2, 0.6, 0.9])
    yield multi, np.round(rng.random((n, 4)), 2), findings, None


@pytest.mark.parametrize("case", list(cases()), ids=lambda c: f"{c[0].task}-{c[3] is not None}")
def test_weighted_metrics_equal_scikit_learn_on_the_drawn_images(case):
    task, probs, labels, cutoffs = case
    weighted = task.weighted_metrics(probs, labels, cutoffs)
    rng = np.random.default_rng(1)
    for size in (len(labels), len(labels), 8, 3, 1):  # small draws miss classes
        for _ in range(20):
            drawn = rng.integers(0, len(labels), size)
            expected = task.headline_metrics(probs[drawn], labels[drawn], cutoffs)
            found = weighted(np.bincount(drawn, minlength=len(labels)).astype(float))
            assert set(found) == set(expected)
            for name, value in expected.items():
                assert found[name] == pytest.approx(value, abs=1e-12, nan_ok=True), name
