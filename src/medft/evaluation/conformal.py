"""Conformal prediction sets shipped with a model: thresholds fitted on a calibration split's
probabilities, saved as conformal.json beside the model, applied by `medft predict`, `serve`
and an exported model's consumers, and their empirical coverage on an evaluated split.

The method is split conformal prediction (Vovk et al. 2005; Angelopoulos & Bates 2021,
arXiv:2107.07511), class-conditional ("Mondrian") so that each class gets its own coverage
instead of the common classes carrying the rare ones. The task says what a set is made of
(`TaskInfo.conformal_states`):

- single-label: the classes. Class y's nonconformity is 1 - p_y, and its threshold the
  ceil((n_y + 1)(1 - alpha))-th smallest nonconformity of the n_y calibration images of
  class y (the ceil((n_y + 1)(1 - alpha)) / n_y empirical quantile). A class is in an
  image's set when 1 - p is at most its threshold, that is when p is at least the
  threshold's probability, which conformal.json stores (``min_probability``). For an image
  exchangeable with the calibration images of its class, P(y in set | Y = y) >= 1 - alpha,
  for every class y.
- multi-label: per finding, its two states, present and absent, each calibrated as a class
  is, on the images in that state (nonconformity 1 - p present, p absent): binary relevance
  with class-conditional calibration. A finding's set is {present}, {absent} or both, and
  P(true state in set | state) >= 1 - alpha for each finding and state. Chosen over sets of
  whole label vectors (Cauchois et al. 2021) because a reader asks about one finding at a
  time, and this guarantee does not weaken as findings are added; it does not cover all
  findings at once (that would need alpha divided by the number of findings).
- a state with too few calibration images for alpha (ceil((n + 1)(1 - alpha)) > n, i.e.
  n < (1 - alpha) / alpha: fewer than 9 at alpha 0.1) has an infinite threshold: it is
  always in the set, and conformal.json (``always_included``) and every output say so.
- a group (the classes; a finding's two states) left with no state gets its most probable
  one: exactly one state of a group is true, so an empty group is certainly wrong, and
  adding a state can only raise the coverage.

What it does not promise: coverage for images unlike the calibration images (another site,
scanner or population: exchangeability fails), coverage for each image rather than on
average over images of a class, or coverage of an ensemble's or test-time views' averaged
scores (predict and evaluate apply a model's sets to its own scores only).

Why no library: mapie is not installed, and mapie, crepes and torchcp keep what they fit in
Python estimator objects, which would have to be pickled to travel with the model. Here the
thresholds are a few numbers in JSON beside a model whose temperature is folded into its
weights, applied by `medft predict`, `serve` and ONNX consumers without medft or an estimator
object (`medft export` copies them into preprocessor.json). The method is one order statistic
per state; tests/test_conformal.py checks its coverage statistically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medft.config import EvaluationOptions
from medft.errors import MedftError
from medft.evaluation.bootstrap import Resampler, bootstrap_intervals
from medft.tasks import TaskInfo

CONFORMAL_NAME = "conformal.json"
RULE = (
    "a state (a class; a finding present or absent) is in an image's set when its probability "
    "(for a finding absent: 1 - p) is at least its min_probability (null: always); a group "
    "(the classes; one finding's two states) left empty gets its most probable state"
)


def needed_images(alpha: float) -> int:
    """The fewest calibration images of a state for a finite threshold at ``alpha``."""
    return math.ceil((1 - alpha) / alpha - 1e-9)


@dataclass(frozen=True)
class ConformalSets:
    """Split-conformal thresholds (see the module text): the least probability that puts each
    state in a set (None: always in it), and the calibration they came from."""

    alpha: float
    method: str
    min_probability: dict[str, float | None]  # per state, in the task's order
    calibration: dict[str, Any]  # split, dataset (a name), images, images per state

    @property
    def coverage(self) -> float:
        return 1 - self.alpha

    @property
    def always_included(self) -> list[str]:
        return [state for state, value in self.min_probability.items() if value is None]

    def describe(self) -> str:
        """One line: the coverage, where the sets were fitted, and the states always in."""
        where = self.calibration
        text = (
            f"{self.coverage:.0%} coverage per class or finding state (alpha {self.alpha:g}), "
            f"fitted on the {where['split']} split"
            + (f" of {where['dataset']}" if where.get("dataset") else "")
            + f", {where['images']} images"
        )
        if self.always_included:
            text += (
                f"; always in the set (fewer than {needed_images(self.alpha)} calibration "
                f"images): {', '.join(self.always_included)}"
            )
        return text

    def included(self, task: TaskInfo, probs: np.ndarray) -> np.ndarray:
        """Which states are in each image's set, (images, states)."""
        scores = task.state_probabilities(probs)
        cut = np.array([-np.inf if v is None else v for v in self.min_probability.values()])
        inside = scores >= cut
        groups = np.array(task.state_groups)
        for group in dict.fromkeys(task.state_groups):
            members = np.flatnonzero(groups == group)
            empty = np.flatnonzero(~inside[:, members].any(axis=1))
            top = members[np.argmax(scores[empty][:, members], axis=1)]
            inside[empty, top] = True
        return inside

    def to_json(self, task: TaskInfo) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "coverage": self.coverage,
            "method": self.method,
            "task": task.task,
            "labels": task.label_names,
            "rule": RULE,
            "min_probability": self.min_probability,
            "always_included": self.always_included,
            "calibration": self.calibration,
        }

    @classmethod
    def from_json(cls, content: Any, path: Path, task: TaskInfo) -> ConformalSets:
        """`to_json`'s content, read back from ``path`` (conformal.json, or an export's
        preprocessor.json) for a model with ``task``'s labels."""
        try:
            alpha = float(content["alpha"])
            values = {
                str(k): None if v is None else float(v)
                for k, v in content["min_probability"].items()
            }
            sets = cls(alpha, str(content["method"]), values, dict(content["calibration"]))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise MedftError(
                f"{path} does not hold conformal sets as medft writes them ({error}); run "
                "`medft calibrate --conformal ALPHA` again or remove it."
            ) from None
        if list(values) != task.conformal_states or not 0 < alpha < 1:
            raise MedftError(
                f"{path} holds conformal sets for {', '.join(values)} at alpha {alpha}, not for "
                f"this model's {', '.join(task.conformal_states)}; run `medft calibrate "
                "--conformal ALPHA` on this model to fit new ones."
            )
        return sets

    def save(self, folder: Path, task: TaskInfo) -> Path:
        path = Path(folder) / CONFORMAL_NAME
        path.write_text(json.dumps(self.to_json(task), indent=2) + "\n")
        return path


def load_conformal(folder: Path, task: TaskInfo) -> ConformalSets | None:
    """The conformal.json saved beside a model, if any."""
    path = Path(folder) / CONFORMAL_NAME
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MedftError(
            f"{path} is not a conformal.json written by medft ({error}); run `medft calibrate "
            "--conformal ALPHA` again or remove it."
        ) from None
    return ConformalSets.from_json(content, path, task)


def fit_conformal(
    task: TaskInfo,
    probs: np.ndarray,
    labels: np.ndarray,
    alpha: float,
    split: str,
    dataset: str | None,
) -> ConformalSets:
    """The class-conditional split-conformal thresholds at ``alpha`` of the calibration
    images' ``probs`` and ``labels`` (the ``split`` of ``dataset``, named for the record)."""
    scores, truth = task.state_probabilities(probs), task.true_states(labels)
    values, counts = {}, {}
    for index, state in enumerate(task.conformal_states):
        # nonconformity 1 - p, its rank-th smallest: the rank-th largest probability
        ranked = np.sort(scores[truth[:, index], index])[::-1]
        rank = math.ceil((len(ranked) + 1) * (1 - alpha) - 1e-9)
        values[state] = float(ranked[rank - 1]) if rank <= len(ranked) else None
        counts[state] = len(ranked)
    calibration = {"split": split, "dataset": dataset, "images": len(scores), "per_state": counts}
    return ConformalSets(alpha, task.conformal_method, values, calibration)


# coverage on an evaluated split -----------------------------------------------------------------


def estimate(value: float, interval: Any) -> dict[str, float | None]:
    return {
        "value": None if np.isnan(value) else float(value),
        "low": interval.low if interval else None,
        "high": interval.high if interval else None,
    }


def conformal_coverage(
    sets: ConformalSets,
    task: TaskInfo,
    scores: Any,
    evaluated: tuple[str | None, str],
    options: EvaluationOptions,
) -> dict[str, Any]:
    """How often the sets hold the true state on the ``evaluated`` (dataset, split) images'
    ``scores`` (a `SplitScores`), and how large they are, with ``options``' bootstrap
    intervals (of patients where known): overall (over images and findings), per state (what
    the method guarantees), and per finding."""
    probs = scores.probs
    included, truth = sets.included(task, probs), task.true_states(scores.labels)
    names = list(dict.fromkeys(task.state_groups))
    member = np.array([[g == name for name in names] for g in task.state_groups], dtype=float)
    hit = (included & truth).astype(float)
    covered, sizes, truth = hit @ member, included.astype(float) @ member, truth.astype(float)

    def statistic(weights: np.ndarray) -> dict[str, float]:
        total = weights.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            per_state = (weights @ hit) / (weights @ truth)
        values = {
            "coverage": weights @ covered.mean(axis=1) / total,
            "mean_set_size": weights @ sizes.mean(axis=1) / total,
        }
        values |= {f"state {s}": v for s, v in zip(task.conformal_states, per_state)}
        values |= {f"group {g}": v for g, v in zip(names, weights @ covered / total)}
        return values | {f"size {g}": v for g, v in zip(names, weights @ sizes / total)}

    intervals = bootstrap_intervals(
        lambda drawn: statistic(np.bincount(drawn, minlength=len(probs)).astype(float)),
        Resampler(len(probs), scores.patients),
        resamples=options.bootstrap_resamples,
        seed=options.seed,
    )
    point = statistic(np.ones(len(probs)))
    images = truth.sum(axis=0)
    content = {
        "alpha": sets.alpha,
        "target": sets.coverage,
        "method": sets.method,
        "calibrated_on": sets.calibration,
        "on_calibration_sample": [sets.calibration["dataset"], sets.calibration["split"]]
        == list(evaluated),
        "always_included": sets.always_included,
        "images": len(probs),
        "coverage": estimate(point["coverage"], intervals.get("coverage")),
        "mean_set_size": estimate(point["mean_set_size"], intervals.get("mean_set_size")),
        "per_state": {
            state: estimate(point[f"state {state}"], intervals.get(f"state {state}"))
            | {"images": int(n)}
            for state, n in zip(task.conformal_states, images)
        },
    }
    if len(names) > 1:
        content["per_finding"] = {
            name: {
                "coverage": estimate(point[f"group {name}"], intervals.get(f"group {name}")),
                "mean_set_size": estimate(point[f"size {name}"], intervals.get(f"size {name}")),
            }
            for name in names
        }
    return content


def saved_sets_coverage(
    members: Sequence[Any],
    views: Sequence[Any],
    scores: Any,
    evaluated: tuple[str | None, str],
    options: EvaluationOptions,
) -> dict[str, Any] | None:
    """`conformal_coverage` of the sets of the one model in ``members``, if it has some; None
    for an ensemble or over test-time ``views`` (the sets were fitted to one model's own
    scores)."""
    sets = members[0].saved_conformal() if len(members) == len(views) == 1 else None
    if sets is None:
        return None
    return conformal_coverage(sets, members[0].task, scores, evaluated, options)


def estimate_text(value: dict[str, float | None], digits: int = 3) -> str:
    shown = "-" if value["value"] is None else f"{value['value']:.{digits}f}"
    if value["low"] is None:
        return shown
    return f"{shown} ({value['low']:.{digits}f}-{value['high']:.{digits}f})"


def coverage_summary(content: dict[str, Any]) -> str:
    """One sentence: the target, the empirical coverage and mean set size, where fitted."""
    where = content["calibrated_on"]
    return (
        f"Conformal prediction sets (alpha {content['alpha']:g}, target coverage "
        f"{content['target']:.0%} per class or finding state; fitted on the {where['split']} "
        f"split, {where['images']} images): coverage {estimate_text(content['coverage'])}, "
        f"mean set size {estimate_text(content['mean_set_size'], 2)}, 95% CIs"
    )


def coverage_notes(content: dict[str, Any]) -> list[str]:
    """What qualifies the coverage: states always in the set, and a split that is the
    calibration sample itself."""
    notes = []
    if content["always_included"]:
        notes.append(
            f"always in the set (too few calibration images for alpha {content['alpha']:g}): "
            + ", ".join(content["always_included"])
        )
    if content["on_calibration_sample"]:
        notes.append("measured on the split the sets were fitted on: not a test of their coverage")
    return notes


def coverage_lines(content: dict[str, Any]) -> list[str]:
    """The evaluation summary's lines: the sentence, coverage per state (and set size per
    finding), and the notes."""
    lines = ["", coverage_summary(content) + ".", f"  {'true state':<28} {'images':>7}  coverage"]
    for state, value in content["per_state"].items():
        lines.append(f"  {state:<28} {value['images']:>7}  {estimate_text(value)}")
    for name, value in (content.get("per_finding") or {}).items():
        lines.append(
            f"  {name:<28} {'':>7}  {estimate_text(value['coverage'])}, mean set size "
            f"{estimate_text(value['mean_set_size'], 2)}"
        )
    return lines + [f"  {note}" for note in coverage_notes(content)]
