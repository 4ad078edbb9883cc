"""External-site validation: another dataset's evaluation against the model's own test split.

At the end of training, and whenever `medft evaluate` scores a model on its own test split
again (one model, no test-time views, no label map: as `pipeline()` scores), the model
folder keeps that split's per-image scores in `test_scores.safetensors` (`SplitRecord`):
probabilities, labels, patient groups renumbered 0..k-1 (never the ids), the split's name,
size and fingerprint, the dataset's public name; no path. `medft evaluate` on another dataset
(none of its splits has that fingerprint) then compares the two (`against_own_test`): each
headline metric on both and the difference (local minus own) with a bootstrap interval that
resamples each sample independently (by patient where it has them), the ECE of both (and a
figure of both reliability diagrams), the prevalence of each label on both, and the share of
images flagged out of distribution on both where the scores carry flags. Both sides are
judged at the same thresholds: those of the local evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from datasets import DatasetDict
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from medft.config.evaluation import EvaluationOptions
from medft.errors import MedftError, first_line
from medft.evaluation.bootstrap import (
    CONFIDENCE,
    IndependentSamples,
    Resampler,
    bootstrap_intervals,
)
from medft.evaluation.calibration import Reliability, reliability
from medft.evaluation.thresholds import Thresholds, cutoffs
from medft.tasks import TaskInfo

TEST_SCORES_NAME = "test_scores.safetensors"
AGAINST_OWN_NAME = "reliability_against_own_test.png"
SECTION = "Against the model's own test split"


class Scores(Protocol):
    """A split's scores as an evaluation holds them (`medft.evaluation.evaluate.SplitScores`)."""

    probs: np.ndarray
    labels: np.ndarray
    patients: np.ndarray | None


def group_numbers(patients: np.ndarray) -> np.ndarray:
    """Each image's patient as a number 0..k-1, in order of first appearance: who is who
    stays, the ids do not."""
    _, first, inverse = np.unique(patients.astype(str), return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]


@dataclass
class SplitRecord:
    """One split's per-image scores as a model folder keeps them, and what split they are."""

    probs: np.ndarray  # (images, labels)
    labels: np.ndarray  # class indices, or (images, labels) multi-hot
    patients: np.ndarray | None  # group numbers 0..k-1; None: the split has no patients
    label_names: list[str]
    split: str
    dataset: str  # its public name (`medft.public_names`)
    fingerprint: str  # the split's, as read: which split it is, without a path
    flagged: np.ndarray | None = None  # flagged out of distribution, per image, where scored

    @classmethod
    def of(
        cls, scores: Scores, task: TaskInfo, split: str, dataset: str, fingerprint: str
    ) -> SplitRecord:
        """A split's scores, with its patients' keys (`medft.data.patients`) renumbered."""
        patients = None if scores.patients is None else group_numbers(scores.patients)
        names = list(task.label_names)
        return cls(scores.probs, scores.labels, patients, names, split, dataset, fingerprint)

    @property
    def images(self) -> int:
        return len(self.labels)

    def resampler(self) -> Resampler:
        return Resampler(self.images, self.patients)

    def described(self) -> dict[str, Any]:
        patients = None if self.patients is None else self.resampler().n_units
        return {
            "split": self.split,
            "dataset": self.dataset,
            "images": self.images,
            "patients": patients,
        }

    def save(self, folder: Path) -> Path:
        arrays = {"probs": self.probs, "labels": self.labels}
        arrays |= {"patients": self.patients} if self.patients is not None else {}
        arrays |= {"flagged": self.flagged} if self.flagged is not None else {}
        metadata = {
            "split": self.split,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "images": str(self.images),
            "labels": json.dumps(self.label_names),
        }
        path = Path(folder) / TEST_SCORES_NAME
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path), metadata)
        return path

    @classmethod
    def read(cls, folder: Path) -> SplitRecord | None:
        """The record in ``folder``; None when there is none (an older model folder)."""
        path = Path(folder) / TEST_SCORES_NAME
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "numpy") as file:
                arrays = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
                metadata = file.metadata()
            names = json.loads(metadata["labels"])
            split, dataset, fingerprint = (metadata[k] for k in ("split", "dataset", "fingerprint"))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
            raise MedftError(
                f"{path} cannot be read ({first_line(error)}); remove it: it is written again "
                "when the model is evaluated on its own test split."
            ) from None
        return cls(
            arrays["probs"],
            arrays["labels"],
            arrays.get("patients"),
            names,
            split,
            dataset,
            fingerprint,
            arrays.get("flagged"),
        )


def keep_if_own_test(folder: Path, local: SplitRecord, scored_as_saved: bool) -> Path | None:
    """Write ``local`` over the model's own test scores when it is that split, scored as the
    model is (one model, no test-time views, no label map): a recalibrated model's own scores
    follow it. Returns the file written, if any."""
    own = SplitRecord.read(folder)
    if own is None or not scored_as_saved or own.fingerprint != local.fingerprint:
        return None
    return local.save(folder)


def against_own_test(
    folder: Path,
    local: SplitRecord,
    dataset: DatasetDict,
    task: TaskInfo,
    thresholds: Thresholds | None,
    options: EvaluationOptions,
    scored_as_saved: bool,
) -> dict[str, Any] | None:
    """The section comparing ``local`` (a split of ``dataset``) with the own test scores kept
    in ``folder``; None when ``dataset`` is the model's own (one of its splits is the own test
    split), {"left_out": why} when they cannot be compared."""
    own = SplitRecord.read(folder)
    if own is None:
        return {
            "left_out": f"the model folder holds no {TEST_SCORES_NAME}: it was trained without "
            "a test split, or by a medft that did not keep them"
        }
    if own.fingerprint in {part._fingerprint for part in dataset.values()}:
        return None
    if not scored_as_saved:
        return {
            "left_out": "these scores are an ensemble's or averaged over test-time views, the "
            "model's own test scores its plain ones; evaluate one model without --tta"
        }
    if own.label_names != task.label_names:
        return {
            "left_out": f"the own test scores are of other labels ({', '.join(own.label_names)})"
        }
    return compare(task, own, local, cutoffs(task, thresholds), options)


def undefined_as_none(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def metric_differences(
    task: TaskInfo,
    own: SplitRecord,
    local: SplitRecord,
    cut: np.ndarray | None,
    options: EvaluationOptions,
) -> dict[str, dict[str, Any]]:
    """Each headline metric on both, and local minus own with its bootstrap interval (each
    sample resampled independently, by its own unit)."""
    values = [task.headline_metrics(s.probs, s.labels, cut) for s in (own, local)]
    weighted = [task.weighted_metrics(s.probs, s.labels, cut) for s in (own, local)]
    sizes = (own.images, local.images)

    def difference(draws: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        found = [
            metrics(np.bincount(drawn, minlength=size).astype(float))
            for metrics, drawn, size in zip(weighted, draws, sizes)
        ]
        return {name: found[1][name] - found[0][name] for name in task.headline}

    intervals = bootstrap_intervals(
        difference,
        IndependentSamples(own.resampler(), local.resampler()),
        resamples=options.bootstrap_resamples,
        seed=options.seed,
        progress=options.progress,
    )
    rows = {}
    for name in task.headline:
        mine, theirs = (undefined_as_none(found.get(name)) for found in values)
        interval = intervals.get(name)
        rows[name] = {
            "own": mine,
            "local": theirs,
            "difference": None if mine is None or theirs is None else theirs - mine,
            "interval": interval.to_json() if interval else None,
        }
    return rows


def compare(
    task: TaskInfo,
    own: SplitRecord,
    local: SplitRecord,
    cut: np.ndarray | None,
    options: EvaluationOptions,
) -> dict[str, Any]:
    """The section's content: both samples, the metrics and their differences, calibration,
    prevalence, and the out-of-distribution flags where both have them."""
    calibration = [
        reliability(s.probs, s.labels, task, options.calibration_bins) for s in (own, local)
    ]
    prevalence = [task.prevalence(s.labels) for s in (own, local)]
    flagged = None
    if own.flagged is not None and local.flagged is not None:
        flagged = {"own": float(own.flagged.mean()), "local": float(local.flagged.mean())}
    return {
        "own": own.described(),
        "local": local.described(),
        "metrics": metric_differences(task, own, local, cut, options),
        "bootstrap": {
            "resamples": options.bootstrap_resamples,
            "seed": options.seed,
            "confidence": CONFIDENCE,
            "units": {"own": own.resampler().unit, "local": local.resampler().unit},
        },
        "calibration": {
            "own_ece": calibration[0].ece,
            "local_ece": calibration[1].ece,
            "own": calibration[0].to_json(),
        },
        "prevalence": {
            name: {"own": prevalence[0][name], "local": prevalence[1][name]}
            for name in task.label_names
        },
        "flagged_out_of_distribution": flagged,
    }


def own_reliability(section: dict[str, Any]) -> Reliability:
    """The own test split's reliability bins, as the section keeps them."""
    return Reliability.from_json(section["calibration"]["own"])
