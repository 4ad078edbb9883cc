"""Finding image files in a folder tree, and telling them from the clutter beside them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from medft.errors import MedftError
from medft.prepare.splits import assign_splits

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_visible_file(path: Path) -> bool:
    """Not hidden, not a system file: worth a look for content (DICOM files may have no
    extension)."""
    return not path.name.startswith(".") and path.name.lower() not in SYSTEM_FILES


def ignore_reason(path: Path, wanted: str = "an image extension") -> str:
    """Why a file is passed over, as a short category for the report."""
    if path.name.lower() in SYSTEM_FILES:
        return f"system file ({path.name})"
    if path.name.startswith("._"):
        return "macOS resource fork (._*)"
    if path.name.startswith("."):
        return "hidden file"
    return f"not {wanted} ({path.suffix.lower() or 'none'})"


def scan_images(
    folder: Path,
    ignored: Counter[str],
    accept: Callable[[Path], bool] = is_image_file,
    wanted: str = "an image extension",
) -> list[Path]:
    """Image files under ``folder`` (those ``accept`` takes), recursively and sorted; others
    counted in ``ignored``, as not ``wanted``."""
    images = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if accept(path):
                images.append(path)
            else:
                ignored[ignore_reason(path, wanted)] += 1
    return images


def list_subfolders(folder: Path) -> list[Path]:
    """Visible subfolders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def count_loose_files(
    folder: Path,
    ignored: Counter[str],
    where: str,
    accept: Callable[[Path], bool] = is_image_file,
    wanted: str = "an image extension",
) -> None:
    """Count files sitting beside class folders (they belong to no class)."""
    for path in folder.iterdir():
        if path.is_file():
            reason = f"image outside a class folder ({where})" if accept(path) else None
            ignored[reason or ignore_reason(path, wanted)] += 1


def require_folder(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise MedftError(f"{what} {path} does not exist; check the path.")
    if not path.is_dir():
        raise MedftError(f"{what} {path} is not a folder.")
    return path


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MedftError(f"{what} {path} does not exist or is not a file; check the path.")
    return path


def open_text(path: Path) -> io.TextIOBase:
    """A text file (or .gz) with any BOM stripped and any line ending, for the csv module."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def content_hashes(paths: list[Path]) -> list[str]:
    """SHA-1 of each file's bytes, so byte-identical copies can be kept in one split."""
    return [
        hashlib.sha1(path.read_bytes()).hexdigest()
        for path in tqdm(paths, desc="Hashing files", unit="file", leave=False)
    ]


def duplicate_notes(hashes: list[str], labels: list[int]) -> dict[str, int]:
    """How many groups of byte-identical files there are, and how many span two classes."""
    labels_of: dict[str, set[int]] = {}
    for digest, label in zip(hashes, labels):
        labels_of.setdefault(digest, set()).add(label)
    copies = Counter(hashes)
    groups = [digest for digest, n in copies.items() if n > 1]
    return {
        "byte_identical_groups": len(groups),
        "byte_identical_groups_across_classes": sum(1 for d in groups if len(labels_of[d]) > 1),
    }


def class_folder_splits(
    paths: list[Path],
    labels: list[int],
    given: list[str | None],
    sizes: dict[str, float],
    seed: int,
) -> tuple[list[str], list[str]]:
    """(split of each image, content hash of each image) for images found in class folders.

    Splits not given are carved stratified by class, and byte-identical copies are
    kept in one split, so a copy cannot leak from train into evaluation.
    """
    hashes = content_hashes(paths)
    return assign_splits(given, sizes, labels=labels, groups=hashes, seed=seed), hashes
