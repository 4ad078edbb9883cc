"""Percentile bootstrap confidence intervals, resampling images or whole patients.

scikit-learn has no bootstrap, so this draws seeded resamples and calls the
same scikit-learn metric functions on each. When images carry a patient id,
patients are drawn with replacement and bring all their images along: images
of one patient are not independent, and resampling them one by one would give
intervals that are too narrow. An image without a patient id is drawn alone. Two samples
(a model's own test split and another site's data) are resampled independently, each by its
own unit, for the interval of a difference between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medft.data.patients import patient_keys
from medft.progress import progress_bar

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000  # resamples for the 95% intervals


@dataclass(frozen=True)
class Interval:
    """A percentile interval, and how many resamples had the metric defined."""

    low: float
    high: float
    resamples_used: int

    def to_json(self) -> dict[str, float | int]:
        return {"low": self.low, "high": self.high, "resamples_used": self.resamples_used}


class Resampler:
    """Draws bootstrap samples of item indices, one unit (image or patient) at a time."""

    def __init__(self, n_items: int, groups: np.ndarray | None = None) -> None:
        if groups is None:
            self.members = None
            self.n_units = n_items
        else:
            _, unit_of_item = np.unique(patient_keys(groups), return_inverse=True)
            order = np.argsort(unit_of_item, kind="stable")
            starts = np.flatnonzero(np.diff(unit_of_item[order], prepend=-1))
            self.members = np.split(order, starts[1:])
            self.n_units = len(self.members)

    @property
    def unit(self) -> str:
        return "image" if self.members is None else "patient"

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of one resample: as many units as there are, drawn with replacement."""
        picked = rng.integers(0, self.n_units, size=self.n_units)
        if self.members is None:
            return picked
        return np.concatenate([self.members[unit] for unit in picked])


class IndependentSamples:
    """Draws a resample of each of two samples (a model's own test split and a site's data),
    independently, each by its own unit: the interval of a difference between them."""

    def __init__(self, first: Resampler, second: Resampler) -> None:
        self.first, self.second = first, second

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.first.draw(rng), self.second.draw(rng)


def bootstrap_intervals(
    statistic: Callable[[Any], dict[str, float]],
    resampler: Resampler | IndependentSamples,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    progress: bool = False,
) -> dict[str, Interval | None]:
    """Interval of every metric ``statistic(indices)`` returns, over seeded resamples (the
    indices of each sample's resample, for `IndependentSamples`).

    A resample where a metric is undefined (NaN, e.g. AUROC with one class drawn)
    is skipped for that metric; `Interval.resamples_used` says how many counted,
    and a metric never defined gets None.
    """
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    for _ in progress_bar(range(resamples), desc="bootstrap", disable=not progress, leave=False):
        for name, value in statistic(resampler.draw(rng)).items():
            values.setdefault(name, []).append(value)
    tail = 100 * (1 - confidence) / 2
    intervals: dict[str, Interval | None] = {}
    for name, drawn in values.items():
        finite = np.asarray(drawn, dtype=float)
        finite = finite[np.isfinite(finite)]
        if not len(finite):
            intervals[name] = None
            continue
        low, high = np.percentile(finite, [tail, 100 - tail])
        intervals[name] = Interval(float(low), float(high), len(finite))
    return intervals
