"""Performance by subgroup: each group of an attribute (sex, age band, view...) against the rest.

For every value of an attribute: how many images (and patients), how many positives of each
thresholded label, the task's headline metrics with bootstrap 95% intervals, each metric's gap
to the rest of the split with its interval, and the sensitivity of each thresholded label at
the stored thresholds. One bootstrap per attribute draws units from the whole split (patients
with all their images where the split has patient ids, else images), and every group, its
rest and their gap are scored on the same draw, so the gap's interval is a paired one.
Groups too small to say anything (fewer than 30 images, or fewer than 5 positives of a
thresholded label) are kept and marked, never dropped. fairlearn's `MetricFrame` does the
slicing by group and its `difference` the gaps would be to the overall value, not to the
rest, and its bootstrap draws rows, not patients: so the groups are sliced here, in one place,
and every metric is the task's own (scikit-learn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medft.bootstrap import Resampler, bootstrap_intervals
from medft.errors import MedftError
from medft.tasks import TaskInfo

MIN_IMAGES = 30
MIN_POSITIVES = 5
MISSING = "(missing)"
GAP = "gap"


@dataclass
class GroupResult:
    """One value of an attribute: its size, metrics and gaps to the rest, with intervals."""

    value: str
    images: int
    patients: int | None
    positives: dict[str, int]  # per thresholded label
    metrics: dict[str, float]
    intervals: dict[str, dict[str, float] | None]
    gaps: dict[str, float]  # the group's value minus the rest's
    gap_intervals: dict[str, dict[str, float] | None]
    too_small: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AttributeResult:
    """Every group of one attribute, and the group with the lowest sensitivity per label."""

    attribute: str
    groups: list[GroupResult]
    worst_sensitivity: dict[str, dict[str, Any]]  # label -> {"group", "sensitivity", ...}

    def to_json(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "groups": [group.to_json() for group in self.groups],
            "worst_sensitivity": self.worst_sensitivity,
        }

    @classmethod
    def from_json(cls, content: dict[str, Any]) -> AttributeResult:
        groups = [GroupResult(**group) for group in content["groups"]]
        return cls(content["attribute"], groups, content["worst_sensitivity"])


def sensitivity_key(label: str) -> str:
    return f"sensitivity_{label}"


def group_metrics(task: TaskInfo, probs: np.ndarray, labels: np.ndarray, cut: np.ndarray | None):
    """The metrics of the images a weight vector selects: the task's headline metrics, and each
    thresholded label's sensitivity at its cut-off (NaN where undefined)."""
    headline = task.weighted_metrics(probs, labels, cut)
    called = [
        (sensitivity_key(name), np.asarray(targets).astype(bool), probs[:, column] >= threshold)
        for (column, targets), name, threshold in zip(
            task.threshold_targets(labels), task.thresholded_labels,
            cut if cut is not None else [],
        )
    ]  # fmt: skip

    def metrics(weights: np.ndarray) -> dict[str, float]:
        found = headline(weights)
        for key, positive, flagged in called:
            positives = (weights * positive).sum()
            found[key] = (weights * (positive & flagged)).sum() / positives if positives else np.nan
        return found

    return metrics


def attribute_values(values: Any, name: str, images: int) -> np.ndarray:
    """An attribute column as text, missing values as '(missing)'."""
    column = np.array([MISSING if v is None or str(v) == "" else str(v) for v in values], object)
    if len(column) != images:
        raise MedftError(
            f"subgroup attribute {name!r} has {len(column)} values for {images} images."
        )
    return column


def evaluate_attribute(
    task: TaskInfo,
    probs: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray | None,
    name: str,
    values: np.ndarray,
    cut: np.ndarray | None,
    *,
    resamples: int,
    seed: int,
) -> AttributeResult:
    """Every group of one attribute, against the rest of the split."""
    groups = sorted(set(values), key=lambda v: (v == MISSING, v))
    inside = {group: values == group for group in groups}
    metrics_of = group_metrics(task, probs, labels, cut)

    def scored(weights: np.ndarray) -> dict[str, float]:
        found: dict[str, float] = {}
        for group, mask in inside.items():
            mine, rest = weights * mask, weights * ~mask
            if not mine.any():
                continue
            own = metrics_of(mine)
            found |= {f"{group}\0{metric}": value for metric, value in own.items()}
            if rest.any():
                other = metrics_of(rest)
                found |= {
                    f"{group}\0{GAP}\0{metric}": value - other[metric]
                    for metric, value in own.items()
                    if metric in other
                }
        return found

    point = scored(np.ones(len(labels)))
    intervals = bootstrap_intervals(
        lambda drawn: scored(np.bincount(drawn, minlength=len(labels)).astype(float)),
        Resampler(len(labels), patients),
        resamples=resamples,
        seed=seed,
    )
    results = []
    for group in groups:
        members = np.flatnonzero(values == group)
        targets = task.threshold_targets(labels[members])
        positives = {
            label: int(np.asarray(target).astype(bool).sum())
            for label, (_, target) in zip(task.thresholded_labels, targets)
        }
        prefix, gap_prefix = f"{group}\0", f"{group}\0{GAP}\0"
        metrics = {k.removeprefix(prefix): v for k, v in point.items()
                   if k.startswith(prefix) and not k.startswith(gap_prefix)}  # fmt: skip
        gaps = {k.removeprefix(gap_prefix): v for k, v in point.items() if k.startswith(gap_prefix)}
        results.append(
            GroupResult(
                value=group,
                images=len(members),
                patients=None if patients is None else len(set(patients[members])),
                positives=positives,
                metrics={k: float(v) for k, v in metrics.items() if np.isfinite(v)},
                intervals={k: json_interval(intervals.get(prefix + k)) for k in metrics},
                gaps={k: float(v) for k, v in gaps.items() if np.isfinite(v)},
                gap_intervals={k: json_interval(intervals.get(gap_prefix + k)) for k in gaps},
                too_small=len(members) < MIN_IMAGES
                or any(count < MIN_POSITIVES for count in positives.values()),
            )
        )
    return AttributeResult(name, results, worst_sensitivity(task, results))


def json_interval(interval) -> dict[str, float] | None:
    return interval.to_json() if interval is not None else None


def worst_sensitivity(task: TaskInfo, groups: list[GroupResult]) -> dict[str, dict[str, Any]]:
    """Per thresholded label, the group (of those large enough) with the lowest sensitivity."""
    worst = {}
    for label in task.thresholded_labels:
        key = sensitivity_key(label)
        judged = [g for g in groups if not g.too_small and key in g.metrics]
        if not judged:
            continue
        group = min(judged, key=lambda g: g.metrics[key])
        worst[label] = {
            "group": group.value,
            "sensitivity": group.metrics[key],
            "interval": group.intervals.get(key),
        }
    return worst


def evaluate_subgroups(
    task: TaskInfo,
    probs: np.ndarray,
    labels: np.ndarray,
    patients: np.ndarray | None,
    attributes: dict[str, Any],
    cut: np.ndarray | None,
    *,
    resamples: int,
    seed: int = 0,
) -> list[AttributeResult]:
    """`evaluate_attribute` for each attribute (name -> a value per image)."""
    return [
        evaluate_attribute(
            task,
            probs,
            labels,
            patients,
            name,
            attribute_values(values, name, len(labels)),
            cut,
            resamples=resamples,
            seed=seed,
        )  # fmt: skip
        for name, values in attributes.items()
    ]
