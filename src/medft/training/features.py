"""The frozen backbone's features of a dataset's splits, for the linear probe: computed once,
batched on the training device, and cached as safetensors beside the dataset.

A split's features are the input of the probe's first layer (the classifier, or the MLP
head's hidden layer: `BackboneFamily.probe_layers`), caught by `FeatureHook` while the model
scores the split's images as `pipeline()` reads them: the processor's evaluation pixels, no
augmentation, the dataset's DICOM settings (`split_features`, as the out-of-distribution
statistics are made). A file per split, named by two fingerprints and recording them: the
model's (a hash of every backbone tensor, the layer, the processor's settings and how DICOM
files are read) and the split's (`Dataset._fingerprint`: its rows as the run uses them). A
file whose recorded keys differ from the run's (another model or dataset under that name, a
copy) is never used: one line says so, and the features are computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import config as datasets_config
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from torch import nn

from medft.errors import MedftError, first_line
from medft.formats.dicom_settings import DicomSettings
from medft.inference.classifier import Classifier
from medft.tasks import TaskInfo
from medft.training.ood_statistics import split_features

logger = logging.getLogger("medft")
FORMAT = "medft linear-probe features, version 1"
CACHE_FOLDER = "feature_cache"  # inside a prepared dataset's folder
HUB_CACHE_FOLDER = "medft_feature_cache"  # in the datasets cache, for a Hub dataset


@dataclass(frozen=True)
class FeatureKey:
    """What a split's cached features were computed from, recorded in their file."""

    model: str  # `model_fingerprint`
    split: str  # the split's Dataset._fingerprint, as the run uses it
    layer: str  # the module whose input the features are
    images: int

    def file_name(self, split_name: str) -> str:
        return f"{split_name}-{self.split[:16]}-{self.model[:16]}.safetensors"

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "model": self.model,
            "split": self.split,
            "layer": self.layer,
            "images": str(self.images),
        }


def model_fingerprint(
    model: nn.Module, head_layers: list[str], processor: Any, dicom: DicomSettings | None
) -> str:
    """A hash of what a model's features depend on: every tensor outside its head (names,
    dtypes, shapes and values), the layer they are the input of, the processor's settings and
    how DICOM files are read."""
    digest = hashlib.sha256()
    head = tuple(f"{name}." for name in head_layers)
    for name, tensor in model.state_dict().items():
        if name.startswith(head):
            continue
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    settings = {"layer": head_layers[0], "processor": processor.to_dict(), "dicom": repr(dicom)}
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def cache_folder(dataset_name: str, chosen: str | None) -> Path:
    """``feature_cache_dir``, else feature_cache/ in a prepared dataset's folder, else (a Hub
    dataset) a folder of its own in the datasets cache."""
    if chosen:
        return Path(chosen).expanduser()
    local = Path(dataset_name).expanduser()
    if local.exists():
        return local / CACHE_FOLDER
    return (
        Path(datasets_config.HF_DATASETS_CACHE) / HUB_CACHE_FOLDER / dataset_name.replace("/", "--")
    )


def read_features(path: Path, key: FeatureKey) -> np.ndarray | None:
    """The features cached at ``path`` for ``key``; None when there are none, or (said in one
    line) when the file cannot be read or was made from another model or split."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="np") as saved:
            recorded = saved.metadata() or {}
            features = saved.get_tensor("features")
    except (SafetensorError, OSError) as error:
        logger.warning(
            "Feature cache %s cannot be read (%s); computing the features again",
            path.name,
            first_line(error) or type(error).__name__,
        )
        return None
    expected = key.metadata()
    differs = [name for name, value in expected.items() if recorded.get(name) != value]
    if differs or len(features) != key.images:
        logger.warning(
            "Feature cache %s was made from another %s (its recorded %s differ from this "
            "run's); not using it: computing the features again and replacing it",
            path.name,
            "model" if "model" in differs or "layer" in differs else "dataset split",
            ", ".join(differs or ["images"]),
        )
        return None
    return features


def write_features(path: Path, key: FeatureKey, features: np.ndarray) -> None:
    """Written whole or not at all: to a file beside, then renamed."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file({"features": features.astype(np.float32)}, partial, metadata=key.metadata())
    os.replace(partial, path)


@dataclass
class SplitFeatures:
    """Each split's features (a row per image, NaN for one that cannot be read) and what
    computing them took."""

    features: dict[str, np.ndarray] = field(default_factory=dict)
    embedded_images: int = 0  # 0 when every split came from the cache
    seconds: float = 0.0


@dataclass(frozen=True)
class FeatureStore:
    """Where features are cached, and how missing ones are computed."""

    folder: Path
    device: torch.device
    batch_size: int
    num_workers: int

    def features(
        self,
        model: nn.Module,
        processor: Any,
        head_layers: list[str],
        task: TaskInfo,
        dicom: DicomSettings | None,
        splits: dict[str, Dataset],
        fingerprints: dict[str, str],
    ) -> SplitFeatures:
        """The features of ``splits`` (name: rows, named by their ``fingerprints``) at the
        input of ``head_layers[0]``, from the cache where it holds them, else computed by
        ``model`` and cached."""
        start = time.perf_counter()
        fingerprint = model_fingerprint(model, head_layers, processor, dicom)
        found = SplitFeatures()
        for name, split in splits.items():
            key = FeatureKey(fingerprint, fingerprints[name], head_layers[0], len(split))
            path = self.folder / key.file_name(name)
            features = read_features(path, key)
            if features is None:
                features = self.embed(model, processor, task, dicom, split, head_layers[0])
                self.save(path, key, features)
                found.embedded_images += len(split)
            found.features[name] = features
        found.seconds = time.perf_counter() - start
        if found.embedded_images:
            logger.info(
                "Linear probe: %d images embedded by the frozen backbone in %.1f s, features "
                "cached in %s",
                found.embedded_images,
                found.seconds,
                self.folder,
            )
        else:
            logger.info("Linear probe: features from cache (%s)", ", ".join(splits))
        return found

    def embed(
        self,
        model: nn.Module,
        processor: Any,
        task: TaskInfo,
        dicom: DicomSettings | None,
        split: Dataset,
        layer: str,
    ) -> np.ndarray:
        scorer = Classifier(model, processor, task, self.device, self.folder, dicom=dicom)
        return split_features(
            scorer,
            split.with_format(None),
            self.batch_size,
            self.num_workers,
            layer=model.get_submodule(layer),
        )

    def save(self, path: Path, key: FeatureKey, features: np.ndarray) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_features(path, key, features)
        except OSError as error:
            raise MedftError(
                f"cannot write the linear probe's feature cache in {self.folder} "
                f"({first_line(error) or type(error).__name__}); set feature_cache_dir to a "
                "folder you can write to."
            ) from None
