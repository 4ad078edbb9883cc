"""Calibration: do scores of 0.8 come true 80% of the time? Reliability bins and ECE.

Scores are put in equal-width bins over [0, 1]. For single-label models the
score is the top class's probability and "true" means the top class is right;
for multi-label models every finding's probability counts as one score, true
when the finding is present. The expected calibration error (ECE) is the
count-weighted mean gap between each bin's mean score and its share of true.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 15
SCORED = {
    False: "top-class probability (true: the top class is right)",
    True: "every finding's probability (true: the finding is present)",
}


@dataclass(frozen=True)
class Reliability:
    """Equal-width bins of scores: how many fell in each, their mean score, and how many came
    true. Empty bins have NaN means."""

    edges: np.ndarray  # bins + 1 values from 0 to 1
    counts: np.ndarray
    mean_score: np.ndarray
    fraction_true: np.ndarray
    scored: str

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
        }


def reliability_bins(scores: np.ndarray, true: np.ndarray, bins: int, scored: str) -> Reliability:
    """Bin ``scores`` (in [0, 1]) equally; a score of exactly 1 goes in the last bin."""
    scores, true = np.asarray(scores, dtype=float).ravel(), np.asarray(true, dtype=float).ravel()
    which = np.minimum((scores * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, weights=scores, minlength=bins) / counts
        fraction_true = np.bincount(which, weights=true, minlength=bins) / counts
    return Reliability(np.linspace(0, 1, bins + 1), counts, mean_score, fraction_true, scored)


def reliability(
    probs: np.ndarray, labels: np.ndarray, multi_label: bool, bins: int = DEFAULT_BINS
) -> Reliability:
    """Reliability of a model's probabilities against the true labels (see the module text)."""
    if multi_label:
        return reliability_bins(probs, labels, bins, SCORED[True])
    right = probs.argmax(axis=-1) == np.asarray(labels)
    return reliability_bins(probs.max(axis=-1), right, bins, SCORED[False])
