"""Calibration: do scores of 0.8 come true 80% of the time? Reliability bins, ECE, and
temperature scaling to make them so.

Scores are put in equal-width bins over [0, 1]; what a score is comes from the
task (`TaskInfo.calibration_scores`: the top class's probability, true when the top
class is right; or every finding's probability, true when the finding is present).
The expected calibration error (ECE) is the count-weighted mean gap between each
bin's mean score and its share of true.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from medft.tasks import CalibrationScores, TaskInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reliability:
    """Equal-width bins of scores: how many fell in each, their mean score, and how many came
    true. Empty bins have NaN means."""

    edges: np.ndarray  # bins + 1 values from 0 to 1
    counts: np.ndarray
    mean_score: np.ndarray
    fraction_true: np.ndarray
    scored: str
    score_axis: str = "score"
    true_axis: str = "fraction true"

    @property
    def ece(self) -> float:
        filled = self.counts > 0
        gaps = np.abs(self.fraction_true[filled] - self.mean_score[filled])
        return float(np.sum(self.counts[filled] * gaps) / self.counts.sum())

    def to_json(self) -> dict:
        def listed(values: np.ndarray) -> list:
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "ece": self.ece,
            "bins": len(self.counts),
            "scored": self.scored,
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "mean_score": listed(self.mean_score),
            "fraction_true": listed(self.fraction_true),
            "score_axis": self.score_axis,
            "true_axis": self.true_axis,
        }

    @classmethod
    def from_json(cls, content: dict) -> Reliability:
        def array(values: list) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=float)

        return cls(
            np.asarray(content["edges"], dtype=float),
            np.asarray(content["counts"]),
            array(content["mean_score"]),
            array(content["fraction_true"]),
            content["scored"],
            content.get("score_axis", "score"),
            content.get("true_axis", "fraction true"),
        )


def reliability_bins(scored: CalibrationScores, bins: int) -> Reliability:
    """Bin the scores (in [0, 1]) equally; a score of exactly 1 goes in the last bin."""
    scores = np.asarray(scored.scores, dtype=float).ravel()
    true = np.asarray(scored.true, dtype=float).ravel()
    which = np.minimum((scores * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, weights=scores, minlength=bins) / counts
        fraction_true = np.bincount(which, weights=true, minlength=bins) / counts
    return Reliability(
        np.linspace(0, 1, bins + 1),
        counts,
        mean_score,
        fraction_true,
        scored.scored,
        scored.score_axis,
        scored.true_axis,
    )


def reliability(probs: np.ndarray, labels: np.ndarray, task: TaskInfo, bins: int) -> Reliability:
    """Reliability of a model's probabilities against the true labels (see the module text)."""
    return reliability_bins(task.calibration_scores(probs, labels), bins)


# temperature scaling --------------------------------------------------------------------------


@dataclass
class TemperatureScaling:
    """Temperatures fitted on a split (one, or one per finding) and the reliability before."""

    values: list[float]
    fitted_on: str
    before: Reliability  # of the scores the report evaluates, before dividing by the temperature

    def to_json(self) -> dict:
        return {
            "values": self.values,
            "fitted_on": self.fitted_on,
            "ece_before": self.before.ece,
            "calibration_before": self.before.to_json(),
        }

    @classmethod
    def from_json(cls, content: dict) -> TemperatureScaling:
        before = Reliability.from_json(content["calibration_before"])
        return cls(list(content["values"]), content["fitted_on"], before)


TEMPERATURE_RANGE = (0.05, 20.0)  # T and 1 / T: beyond it a split separates, not calibrates


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    task: TaskInfo,
    per_label: bool = False,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """The temperature T (one, or one per label) minimising the task's loss on ``logits`` / T
    (+ ``offset``, a prior shift added after it): cross-entropy of the softmax, or binary
    cross-entropy of each sigmoid (Guo et al. 2017), sought within TEMPERATURE_RANGE.

    T = 1 is kept, and logged, where there is nothing to fit: a label with one value in every
    image of the split (a finding in all or none), or scores that put every image on the right
    side (a few images, a rare finding), where the loss falls without end as T goes to 0 and
    would make every later score 0 or 1."""
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    offset_t = torch.as_tensor(0.0 if offset is None else offset, dtype=torch.float64)
    labels_t = task.loss_targets(labels)
    if not per_label:
        return np.array([label_temperature(task, logits_t, labels_t, offset_t, "the label")])
    offsets = offset_t.expand(logits_t.shape[1])
    return np.array(
        [
            label_temperature(task, logits_t[:, [i]], labels_t[:, [i]], offsets[[i]], name)
            for i, name in enumerate(task.label_names)
        ]
    )


def label_temperature(
    task: TaskInfo, logits: torch.Tensor, labels: torch.Tensor, offset: torch.Tensor, name: str
) -> float:
    """One temperature for ``logits`` (1 where there is nothing to fit, logged as ``name``)."""

    def loss_at(log_t: torch.Tensor) -> torch.Tensor:
        return task.loss(logits / log_t.exp() + offset, labels, None, 0.0)

    if bool((labels == labels[0]).all()):
        logger.warning(
            "Calibration: %s has one value in every image of the split; temperature 1 kept", name
        )
        return 1.0
    if loss_at(torch.tensor(np.log(1e-6), dtype=torch.float64)) < 1e-6:
        logger.warning(
            "Calibration: the split's scores put every image on the right side for "
            "%s; no temperature can be fitted, 1 kept. A larger split calibrates.",
            name,
        )
        return 1.0
    bound = np.log(TEMPERATURE_RANGE[1])
    free = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([free], lr=0.1, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_at(bound * torch.tanh(free))
        loss.backward()
        return loss

    optimizer.step(closure)
    log_t = float(bound * torch.tanh(free.detach()))
    if abs(log_t) > 0.99 * bound:
        logger.warning(
            "Calibration: the temperature for %s is held at the edge of %s", name, TEMPERATURE_RANGE
        )
    return float(np.exp(log_t))
