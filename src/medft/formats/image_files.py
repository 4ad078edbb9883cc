"""Finding image files in a folder tree, and telling them from the clutter beside them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

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
