"""A source folder's files: class folders and what lies beside them, label tables read as
text, byte-identical copies found. The image files themselves are found by
`medft.formats.image_files`."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from medft.errors import MedftError
from medft.formats.image_files import ignore_reason, is_image_file
from medft.prepare.splits import assign_splits
from medft.progress import progress_bar


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
    """A text file (or .gz) for the csv module, any line ending kept: UTF-8 (a BOM stripped), or
    UTF-16 with a byte-order mark (Excel's "Unicode Text", some PACS exports)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        return io.StringIO(decode_text(file.read(), path), newline="")


def decode_text(data: bytes, path: Path) -> str:
    """``data`` as text: UTF-8, or UTF-16 with a byte-order mark; anything else is refused,
    naming the line and the byte at fault.

    Other encodings (Latin-1, cp1252) are not guessed: a wrong guess would change the labels
    without a word.
    """
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else None
    if encoding is None and b"\0" in data:
        raise MedftError(
            f"{path} holds NUL bytes: it is UTF-16 without a byte-order mark, or not text; save "
            "it as UTF-8 (in Excel: Save As, CSV UTF-8)."
        )
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as error:
        lines = data[: error.start].decode(encoding or "utf-8", "replace").split("\n")
        raise MedftError(
            f"{path} is not {'UTF-16' if encoding else 'UTF-8'} text: line {len(lines)} has the "
            f"byte 0x{data[error.start]:02x} after {lines[-1][-40:]!r}; save it as UTF-8 (in "
            "Excel: Save As, CSV UTF-8)."
        ) from None


def content_hashes(paths: list[Path]) -> list[str]:
    """SHA-1 of each file's bytes, so byte-identical copies can be kept in one split."""
    return [
        hashlib.sha1(path.read_bytes()).hexdigest()
        for path in progress_bar(paths, desc="Hashing files", unit="file", leave=False)
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
