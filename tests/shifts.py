"""Generated scans with a known shift between sites: the same classes (stripes that run across
or down the image, or none), acquired with less contrast, more noise, a lower resolution, or at
another prevalence. A tiny model learns the classes in a few epochs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

PATTERNS = {  # class -> which way the stripes run (None: no stripes), their half-period in px
    "across": ("across", (3, 6)),
    "down": ("down", (3, 6)),
    "across fine": ("across", (3, 4)),
    "across coarse": ("across", (4, 6)),
    "down fine": ("down", (3, 4)),
    "down coarse": ("down", (4, 6)),
    "blank": (None, (3, 6)),
}


@dataclass(frozen=True)
class Acquisition:
    """How a site's scanner renders the pattern."""

    contrast: float = 1.0  # the stripes' amplitude, relative to the training site's
    noise: float = 40.0  # standard deviation of the noise, in grey levels
    resolution: float = 1.0  # acquired at this fraction of the size, then resized back


TRAINING_SITE = Acquisition()


def scan(rng: np.random.Generator, pattern: str, acquisition: Acquisition) -> Image.Image:
    height, width = (int(side) for side in rng.integers(36, 56, size=2))
    y, x = np.mgrid[:height, :width]
    runs, periods = PATTERNS[pattern]
    along = (y if runs == "across" else x) + rng.integers(0, 8)
    stripes = np.sign(np.sin(along * np.pi / rng.integers(*periods, endpoint=True)))
    pixels = 128 + 60 * acquisition.contrast * stripes * (runs is not None)
    pixels = pixels + rng.normal(0, acquisition.noise, (height, width))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    if acquisition.resolution < 1:
        small = [max(2, round(side * acquisition.resolution)) for side in (width, height)]
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    return image


def scans_dataset(
    folder: Path,
    counts: dict[str, int],
    classes: tuple[str, ...] = ("across", "down"),
    shares: tuple[float, ...] | None = None,
    acquisition: Acquisition = TRAINING_SITE,
    seed: int = 0,
) -> Path:
    """A prepared dataset of ``counts`` images per split, ``shares`` of them in each class
    (default: equal), two images per patient (`patient_id`), acquired as ``acquisition``."""
    rng = np.random.default_rng(seed)
    shares = shares or tuple(1 / len(classes) for _ in classes)
    label = ClassLabel(names=list(classes))
    features = Features({"image": ImageFeature(), "label": label, "patient_id": Value("string")})
    splits = {}
    for split, count in counts.items():
        per_class = np.round(np.array(shares) * count).astype(int)
        labels = [label for label, n in enumerate(per_class) for _ in range(n)]
        images = [scan(rng, classes[label], acquisition) for label in labels]
        patients = [f"{split}-patient-{row // 2}" for row in range(len(labels))]
        content = {"image": images, "label": labels, "patient_id": patients}
        splits[split] = Dataset.from_dict(content, features=features)
    DatasetDict(splits).save_to_disk(str(folder))
    return folder


def without_labels(source: Path, folder: Path) -> Path:
    """A copy of a prepared dataset with no label column: a site's unlabelled scans."""
    dataset = DatasetDict.load_from_disk(str(source))
    dataset.remove_columns("label").save_to_disk(str(folder))
    return folder
