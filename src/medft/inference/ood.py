"""Out-of-distribution scores and flags: how unlike a model's training images an image is.

The score is the Mahalanobis distance of Lee et al. 2018 ("A simple unified framework for
detecting out-of-distribution samples and adversarial attacks", NeurIPS): an image's
penultimate-layer features (the input of the classifier layer its family names) measured
against the nearest group mean of the training images' features, under one covariance
the groups share. The groups are what the task centres on (`TaskInfo.feature_groups`: the
classes of a single-label model; one group for a multi-label one, whose images carry any
number of labels, so that class means are ill-defined). Mahalanobis rather than the
k-nearest-neighbour distance: its statistics are a few means and one matrix, whatever the
number of training images, and hold no training image's features; a neighbour search
would ship every one of them with the model.

The shared covariance is scikit-learn's Ledoit-Wolf estimate: on small medical sets the
features (1280 for EfficientNet-Lite0) outnumber the training images, the sample covariance
is then singular and its inverse undefined; Ledoit-Wolf shrinks it towards a scaled
identity by the amount that minimises the expected squared error, in closed form, with
nothing to tune.

The flag threshold is fixed on the validation split at a stated false-flag rate alpha
(``ood_false_flag_rate``): the ceil((n + 1)(1 - alpha))-th smallest of its n distances
(the split-conformal quantile), so that an image drawn like the validation images is
flagged with probability at most alpha. `medft train` saves the statistics, the threshold
and the rate beside the model (`OOD_NAME`, safetensors: no pickles;
`medft.training.ood_statistics`). Scoring catches the features with a forward hook while
it scores (`FeatureHook`, in `medft.inference.scoring`): no second pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from sklearn.covariance import LedoitWolf
from torch import nn

from medft.errors import MedftError, first_line
from medft.inference.classifier import Classifier
from medft.inference.onnx_model import OnnxClassifier
from medft.modeling.families import family_of

OOD_NAME = "ood_statistics.safetensors"
METHOD = "Mahalanobis distance to the nearest training group mean (Ledoit-Wolf covariance)"
OOD_COLUMNS = ["ood_score", "ood_flag"]
UNLIKE_TRAINING = "Unlike the training images: check the input"


def classifier_layer(model: nn.Module) -> nn.Module:
    """The layer producing the logits, as the model's family names it; its input is the
    penultimate-layer features."""
    return model.get_submodule(family_of(model).classifier_name(model))


class FeatureHook:
    """The features of each image a model scores, caught by a forward hook on its classifier
    layer (or another ``layer``: the linear probe's first) while `medft.inference.scoring`
    scores them (no second pass): an image's rows (one per test-time view) averaged, then
    ``reduce``d (e.g. to its distance), kept by item."""

    def __init__(
        self,
        model: nn.Module,
        reduce: Callable[[np.ndarray], np.ndarray] | None = None,
        layer: nn.Module | None = None,
    ) -> None:
        self.layer = classifier_layer(model) if layer is None else layer
        self.reduce = reduce
        self.caught: list[torch.Tensor] = []
        self.kept: dict[int, np.ndarray] = {}

    @contextmanager
    def hooked(self) -> Iterator[FeatureHook]:
        handle = self.layer.register_forward_hook(self.catch)
        try:
            yield self
        finally:
            handle.remove()
            self.caught.clear()

    def catch(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        self.caught.append(inputs[0].detach().flatten(1).float())

    def keep(self, indices: Sequence[int]) -> None:
        """The features caught since the last batch (none when the batch was another
        model's) are those of the items ``indices``."""
        if not self.caught:
            return
        features = torch.stack(self.caught).mean(0).cpu().numpy().astype(np.float64)
        self.caught.clear()
        self.kept.update(zip(indices, self.reduce(features) if self.reduce else features))

    def values(self, items: int) -> np.ndarray:
        """What was kept of each of ``items`` items, NaN for those not scored (unreadable)."""
        shape = np.shape(next(iter(self.kept.values()), np.nan))
        values = np.full((items, *shape), np.nan)
        for index, value in self.kept.items():
            values[index] = value
        return values


@dataclass(frozen=True)
class OodStatistics:
    """The training images' feature statistics and the flag threshold, as saved."""

    means: np.ndarray  # (groups, features)
    precision: np.ndarray  # (features, features): the inverse of the shared covariance
    threshold: float  # a distance above it is flagged
    false_flag_rate: float  # the rate the threshold was set for, on the validation split
    shrinkage: float  # Ledoit-Wolf's, towards a scaled identity
    training_images: int
    validation_images: int

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Each row's Mahalanobis distance to the nearest group mean."""
        features = np.asarray(features, dtype=np.float64)
        precision, means = self.precision.astype(np.float64), self.means.astype(np.float64)
        weighted = means @ precision
        squared = (
            np.einsum("ij,ij->i", features @ precision, features)[:, None]
            - 2 * features @ weighted.T
            + np.einsum("ij,ij->i", weighted, means)[None, :]
        )
        return np.sqrt(np.clip(squared.min(axis=1), 0, None))

    def flagged(self, distances: np.ndarray) -> np.ndarray:
        return np.nan_to_num(distances, nan=-np.inf) > self.threshold

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / OOD_NAME
        numbers = {
            "threshold": self.threshold,
            "false_flag_rate": self.false_flag_rate,
            "shrinkage": self.shrinkage,
            "training_images": self.training_images,
            "validation_images": self.validation_images,
        }
        tensors = {
            "means": self.means.astype(np.float32),
            "precision": self.precision.astype(np.float32),
        }
        metadata = {"method": METHOD} | {key: repr(value) for key, value in numbers.items()}
        save_file(tensors, path, metadata=metadata)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> OodStatistics | None:
        """The statistics saved in ``folder``; None for a folder without them (older)."""
        path = Path(folder) / OOD_NAME
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="np") as saved:
                metadata = saved.metadata()
                means, precision = saved.get_tensor("means"), saved.get_tensor("precision")
            return cls(
                means,
                precision,
                float(metadata["threshold"]),
                float(metadata["false_flag_rate"]),
                float(metadata["shrinkage"]),
                int(metadata["training_images"]),
                int(metadata["validation_images"]),
            )
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:
            raise MedftError(
                f"cannot read {path} ({first_line(error) or type(error).__name__}); delete it "
                "(the model then scores without out-of-distribution flags) or train again."
            ) from None


def flag_threshold(distances: np.ndarray, false_flag_rate: float) -> float:
    """The split-conformal threshold: the ceil((n + 1)(1 - rate))-th smallest distance, so
    that a new image drawn like these exceeds it with probability at most ``rate``; the
    largest when there are too few distances for that (the rate is then about 1 / (n + 1))."""
    ordered = np.sort(distances)
    rank = math.ceil((len(ordered) + 1) * (1 - false_flag_rate))
    return float(ordered[min(rank, len(ordered)) - 1])


def fit_statistics(
    features: np.ndarray, groups: np.ndarray, validation: np.ndarray, false_flag_rate: float
) -> OodStatistics:
    """Group means and the Ledoit-Wolf precision of the training ``features`` centred on
    their groups, with the threshold set on the ``validation`` features."""
    found, group_of = np.unique(groups, return_inverse=True)
    means = np.stack([features[group_of == group].mean(axis=0) for group in range(len(found))])
    estimate = LedoitWolf(assume_centered=True).fit(features - means[group_of])
    statistics = OodStatistics(
        means,
        estimate.precision_,
        math.inf,
        false_flag_rate,
        float(estimate.shrinkage_),
        len(features),
        len(validation),
    )
    threshold = flag_threshold(statistics.distances(validation), false_flag_rate)
    return replace(statistics, threshold=threshold)


class OodScorer(FeatureHook):
    """A model's out-of-distribution scores: the distance of each image it scores."""

    def __init__(self, classifier: Classifier, statistics: OodStatistics) -> None:
        super().__init__(classifier.model, statistics.distances)
        self.statistics = statistics

    def cells(self, distance: float) -> list[str]:
        """`medft predict`'s `OOD_COLUMNS` of one image; empty for an unreadable one."""
        if np.isnan(distance):
            return ["", ""]
        return [f"{distance:.4f}", "true" if distance > self.statistics.threshold else "false"]

    def summary(self, items: int) -> dict[str, Any]:
        """How many of the ``items`` scored images are flagged (`flag_summary`)."""
        return flag_summary(self.statistics, self.values(items))

    def scored_flags(self, items: int) -> np.ndarray:
        """The flags of the images that could be read, in order (as their scores are kept)."""
        distances = self.values(items)
        return self.statistics.flagged(distances[~np.isnan(distances)])


def flag_summary(statistics: OodStatistics, distances: np.ndarray) -> dict[str, Any]:
    """How many of the scored images (NaN: unreadable) are flagged, and how the threshold
    was set."""
    scored = int(np.count_nonzero(~np.isnan(distances)))
    flagged = int(statistics.flagged(distances).sum())
    return {
        "method": METHOD,
        "flagged": flagged,
        "images": scored,
        "rate": flagged / scored if scored else None,
        "threshold": statistics.threshold,
        "false_flag_rate": statistics.false_flag_rate,
    }


def flags_text(summary: dict[str, Any]) -> str:
    """One line: how many images were flagged, at what threshold, set how."""
    rate = "" if summary["rate"] is None else f" ({summary['rate']:.1%})"
    return (
        f"out of distribution: {summary['flagged']} of {summary['images']} image(s) flagged"
        f"{rate}, at Mahalanobis distance > {summary['threshold']:.2f} (set on the validation "
        f"split for a {summary['false_flag_rate']:.0%} false-flag rate)"
    )


def ood_scorer(
    members: Sequence[Classifier | OnnxClassifier], requested: bool | None
) -> OodScorer | None:
    """The scorer of one model whose folder holds `OOD_NAME`. Not ``requested`` (None): one
    where there is one, else none (an ensemble, an ONNX model, an older folder); False: none;
    True: one, or a one-line error saying why there is none."""
    if requested is False:
        return None
    (model, *others) = members
    if others or not isinstance(model, Classifier):
        if requested:
            what = "an ensemble" if others else f"{model.path.name}, an ONNX model"
            raise MedftError(
                f"--ood true needs one PyTorch model folder, not {what}: its features are the "
                "input of its classifier layer. Give one model folder, or leave out --ood."
            )
        return None
    statistics = OodStatistics.load(model.folder)
    if statistics is None:
        if requested:
            raise MedftError(
                f"--ood true: {model.folder} has no {OOD_NAME} (a model saved before medft kept "
                "its training images' feature statistics); train it again, or leave out --ood."
            )
        return None
    return OodScorer(model, statistics)
