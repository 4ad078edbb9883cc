"""Performance by subgroup: each group of an attribute (sex, age band, view...) against the rest.

For every value of an attribute: how many images (and patients), how many positives of each
thresholded label, the task's headline metrics with bootstrap 95% intervals, each metric's gap
to the rest of the split with its interval, and the sensitivity of each thresholded label at
the stored thresholds. One bootstrap draws units from the whole split (patients with all their
images where the split has patient ids, else images; the same draws as the headline intervals),
and every group, its rest and their gap are scored on the same draw, so the gap's interval is a
paired one. Groups too small to say anything (fewer than 30 images, or fewer than 5 positives
of every thresholded label) are kept and marked, never dropped; a finding with fewer than 5
positives in a group marks that finding's numbers there. fairlearn's `MetricFrame` does the
slicing by group, but its `difference` is to the overall value, not to the rest, and its
bootstrap draws rows, not patients: so the groups are sliced here, in one place, and every
metric is the task's own (scikit-learn's values, from `TaskInfo.weighted_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medft.errors import MedftError
from medft.evaluation.bootstrap import Resampler, bootstrap_intervals
from medft.tasks import TaskInfo

MIN_IMAGES = 30
MIN_POSITIVES = 5
MAX_GROUPS = 20  # more distinct values than this is a measurement (age), not a grouping
MISSING = "(missing)"


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
    few_positives: list[str] = field(default_factory=list)  # labels under MIN_POSITIVES here

    def caveat(self, shown: int | None = None) -> str:
        """Why the group's numbers say little, in words ('' when nothing is wrong); at most
        ``shown`` label names per reason."""

        def names(labels: list[str]) -> str:
            if shown is None or len(labels) <= shown:
                return ", ".join(labels)
            return f"{', '.join(labels[:shown])} and {len(labels) - shown} more"

        reasons = [f"fewer than {MIN_IMAGES} images"] * (self.images < MIN_IMAGES)
        none = [label for label in self.few_positives if not self.positives[label]]
        few = [label for label in self.few_positives if self.positives[label]]
        if none:
            reasons.append(f"no positives of {names(none)}")
        if few:
            reasons.append(f"fewer than {MIN_POSITIVES} positives of {names(few)}")
        only = [label for label, count in self.positives.items() if count == self.images]
        if only:
            reasons.append(f"no negatives of {names(only)}")
        return "; ".join(reasons)

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


def group_metrics(
    task: TaskInfo, probs: np.ndarray, labels: np.ndarray, cut: np.ndarray | None
) -> Callable[[np.ndarray], dict[str, float]]:
    """The metrics of some images as a function of their resample weights: the task's headline
    metrics, and each thresholded label's sensitivity at its cut-off. A rate over a side that
    was not drawn is undefined (NaN), not 0 as scikit-learn's zero_division has it for a whole
    split: a group may hold no positives, or no negatives, at all."""
    headline = task.weighted_metrics(probs, labels, cut)
    names = [sensitivity_key(label) for label in task.thresholded_labels]
    if not names:
        return headline
    targets = task.threshold_targets(labels)
    positive = np.column_stack([np.asarray(target).astype(bool) for _, target in targets])
    flagged = probs[:, [column for column, _ in targets]] >= cut
    positive, hit = positive.astype(float), (positive & flagged).astype(float)

    def metrics(weights: np.ndarray) -> dict[str, float]:
        drawn, hits = (np.einsum("i,ij->j", weights, part) for part in (positive, hit))
        sensitivity = np.divide(hits, drawn, out=np.full(len(names), np.nan), where=drawn > 0)
        found = headline(weights) | dict(zip(names, sensitivity.tolist()))
        for rate, side in (("sensitivity", drawn[0]), ("specificity", weights.sum() - drawn[0])):
            if rate in found and not side:  # a binary task's rates, of its one label
                found[rate] = np.nan
        return found

    return metrics


def attribute_values(values: Any, name: str, images: int) -> np.ndarray:
    """An attribute column as text, missing values as '(missing)'."""
    column = np.array([MISSING if v is None or str(v) == "" else str(v) for v in values], object)
    if len(column) != images:
        raise MedftError(
            f"subgroup attribute {name!r} has {len(column)} values for {images} images."
        )
    distinct = len(set(column))
    if distinct > MAX_GROUPS:
        raise MedftError(
            f"subgroup attribute {name!r} has {distinct} distinct values; subgroups need a column "
            f"of at most {MAX_GROUPS} categories (an age_band rather than an age)."
        )
    return column


@dataclass
class Slice:
    """Some images of the split, and their metrics from the weights of a resample."""

    indices: np.ndarray
    metrics: Callable[[np.ndarray], dict[str, float]]

    def scored(self, weights: np.ndarray) -> dict[str, float] | None:
        """The metrics of these images in a resample (of the whole split), None if none drawn."""
        mine = weights[self.indices]
        return self.metrics(mine) if mine.any() else None


@dataclass
class AttributeSlices:
    """An attribute's groups and the rest of the split beside each, ready to score."""

    values: np.ndarray
    own: dict[str, Slice]
    rest: dict[str, Slice]  # a group's complement (none when the group is the whole split)
    partner: dict[str, str]  # of two groups, each is the other's rest: scored once, not twice

    @classmethod
    def of(cls, task: TaskInfo, probs, labels, cut, values: np.ndarray) -> AttributeSlices:
        def sliced(mask: np.ndarray) -> Slice:
            indices = np.flatnonzero(mask)
            return Slice(indices, group_metrics(task, probs[indices], labels[indices], cut))

        groups = sorted(set(values), key=lambda v: (v == MISSING, v))
        own = {group: sliced(values == group) for group in groups}
        if len(groups) == 2:
            return cls(values, own, {}, dict(zip(groups, reversed(groups))))
        rest = {group: sliced(values != group) for group in groups if len(groups) > 1}
        return cls(values, own, rest, {})

    def scored(self, weights: np.ndarray) -> dict[tuple[str, str, str], float]:
        """(group, 'value' or 'gap', metric) -> its value in one resample (given as weights)."""
        own = {group: part.scored(weights) for group, part in self.own.items()}
        rest = {group: own[other] for group, other in self.partner.items()}
        rest |= {group: part.scored(weights) for group, part in self.rest.items()}
        found = {}
        for group, mine in own.items():
            if mine is None:
                continue
            found |= {(group, "value", metric): value for metric, value in mine.items()}
            other = rest.get(group)
            if other is not None:
                found |= {
                    (group, "gap", metric): value - other[metric]
                    for metric, value in mine.items()
                    if metric in other
                }
        return found


def group_result(
    task: TaskInfo,
    labels: np.ndarray,
    patients: np.ndarray | None,
    group: str,
    members: np.ndarray,
    point: dict[tuple[str, str, str], float],
    intervals: dict,
) -> GroupResult:
    """One group's counts, and its values and gaps (finite ones) with their intervals."""
    targets = task.threshold_targets(labels[members])
    positives = {
        label: int(np.asarray(target).astype(bool).sum())
        for label, (_, target) in zip(task.thresholded_labels, targets)
    }
    few = [label for label, count in positives.items() if count < MIN_POSITIVES]

    def part(kind: str) -> tuple[dict[str, float], dict[str, dict[str, float] | None]]:
        values = {key[2]: value for key, value in point.items() if key[:2] == (group, kind)}
        finite = {metric: float(value) for metric, value in values.items() if np.isfinite(value)}
        return finite, {
            metric: json_interval(intervals.get((group, kind, metric))) for metric in values
        }

    metrics, metric_intervals = part("value")
    gaps, gap_intervals = part("gap")
    return GroupResult(
        value=group,
        images=len(members),
        patients=None if patients is None else len(set(patients[members])),
        positives=positives,
        metrics=metrics,
        intervals=metric_intervals,
        gaps=gaps,
        gap_intervals=gap_intervals,
        too_small=len(members) < MIN_IMAGES or bool(positives) and len(few) == len(positives),
        few_positives=few,
    )


def json_interval(interval) -> dict[str, float] | None:
    return interval.to_json() if interval is not None else None


def worst_sensitivity(task: TaskInfo, groups: list[GroupResult]) -> dict[str, dict[str, Any]]:
    """Per thresholded label, the group with the lowest sensitivity, of those large enough and
    with enough positives of the label."""
    worst = {}
    for label in task.thresholded_labels:
        key = sensitivity_key(label)
        judged = [
            group
            for group in groups
            if key in group.metrics and not group.too_small and label not in group.few_positives
        ]
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
    progress: bool = False,
) -> list[AttributeResult]:
    """Every group of each attribute (name -> a value per image) against the rest of the split,
    all scored on the same resamples."""
    slices = {
        name: AttributeSlices.of(
            task, probs, labels, cut, attribute_values(values, name, len(labels))
        )
        for name, values in attributes.items()
    }

    def scored(weights: np.ndarray) -> dict[tuple[str, str, str, str], float]:
        return {
            (name, *key): value
            for name, part in slices.items()
            for key, value in part.scored(weights).items()
        }

    point = scored(np.ones(len(labels)))
    intervals = bootstrap_intervals(
        lambda drawn: scored(np.bincount(drawn, minlength=len(labels)).astype(float)),
        Resampler(len(labels), patients),
        resamples=resamples,
        seed=seed,
        progress=progress,
    )
    results = []
    for name, part in slices.items():
        mine = {key[1:]: value for key, value in point.items() if key[0] == name}
        bounds = {key[1:]: value for key, value in intervals.items() if key[0] == name}
        groups = [
            group_result(
                task, labels, patients, group, np.flatnonzero(part.values == group), mine, bounds
            )
            for group in part.own
        ]
        results.append(AttributeResult(name, groups, worst_sensitivity(task, groups)))
    return results
