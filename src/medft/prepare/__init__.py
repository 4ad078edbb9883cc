"""`prepare_dataset`: one front door over the source readers and the writer."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medft.errors import MedftError
from medft.near_duplicates import DEFAULT_THRESHOLD, parse_threshold
from medft.prepare.brain_tumor import list_brain_tumor_44c
from medft.prepare.chestxray14 import list_chestxray14
from medft.prepare.csv_table import list_csv
from medft.prepare.dicom import list_dicom
from medft.prepare.folder import list_image_folder
from medft.prepare.images import ImageOptions
from medft.prepare.listing import SourceListing
from medft.prepare.private import KEPT_PRIVATELY
from medft.prepare.writer import check_output_folder, write_dataset

SOURCES: dict[str, Callable[..., SourceListing]] = {
    "brain-tumor-44c": list_brain_tumor_44c,
    "chestxray14": list_chestxray14,
    "folder": list_image_folder,
    "csv": list_csv,
    "dicom": list_dicom,
}
# what a reader may take from the writer's options (the DICOM reader keeps its salt beside
# the output folder), and options never written to the report (a salt is a secret); options
# that take a path are recorded in the private record instead (paths may name patients)
SHARED_WITH_READERS = ("output",)
SECRET_OPTIONS = ("id_salt",)
NAME_SEPARATORS = ("/", "\\")


def path_parameters(reader: Callable[..., SourceListing]) -> set[str]:
    """The reader's parameters that take a path (annotated with `Path`)."""
    hints = typing.get_type_hints(reader)
    return {key for key, hint in hints.items() if Path in (hint, *typing.get_args(hint))}


def recorded_value(key: str, value: Any, paths: set[str]) -> Any:
    """An option's value as the report holds it."""
    if value is None:
        return None
    if key in SECRET_OPTIONS:
        return "(given, not recorded)"
    return KEPT_PRIVATELY if key in paths else value


def prepare_dataset(
    source_type: str,
    output: str | Path,
    *,
    image_size: int | None = None,
    png_compression: int = 0,
    num_proc: int | None = None,
    overwrite: bool = False,
    name: str | None = None,
    near_duplicates: str | int | None = DEFAULT_THRESHOLD,
    **source_options: Any,
) -> dict[str, Any]:
    """List a source, read its images and save a `DatasetDict` to ``output``; returns the report.

    ``source_options`` go to the source's reader (``source=``, ``task=``,
    ``val_size=``, ...; see `SOURCES`). ``name`` (default: the output folder's) is how the
    report and the dataset card know the dataset; the paths go to the private record.
    ``near_duplicates`` (bits, or 'off' / None) keeps near copies of an image in one split.
    """
    if source_type not in SOURCES:
        raise MedftError(f"unknown source '{source_type}'; choose one of {', '.join(SOURCES)}.")
    if image_size is not None and image_size < 8:
        raise MedftError(f"--image-size must be at least 8 pixels, got {image_size}.")
    if not 0 <= png_compression <= 9:
        raise MedftError(f"--png-compression must be 0-9, got {png_compression}.")
    if name is not None and (not name.strip() or any(c in name for c in NAME_SEPARATORS)):
        raise MedftError(f"--name {name!r} must be a name, not a path (no / or \\).")
    threshold = parse_threshold(near_duplicates)
    check_output_folder(Path(output).expanduser().resolve(), overwrite)  # fail before the listing
    reader = SOURCES[source_type]
    signature = inspect.signature(reader)
    shared = {key: output for key in SHARED_WITH_READERS if key in signature.parameters}
    bound = signature.bind(**source_options, **shared)
    bound.apply_defaults()
    listing = reader(**bound.arguments)
    given = {key: value for key, value in bound.arguments.items() if key not in shared}
    paths = path_parameters(reader)
    options = {key: recorded_value(key, value, paths) for key, value in given.items()}
    options |= {"image_size": image_size, "png_compression": png_compression,
                "near_duplicates": "off" if threshold is None else threshold}  # fmt: skip
    private_options = {
        key: str(Path(value).expanduser().resolve())
        for key, value in given.items()
        if key in paths and value is not None
    }
    return write_dataset(
        listing,
        output,
        image_options=ImageOptions(image_size, png_compression, listing.dicom),
        num_proc=num_proc,
        overwrite=overwrite,
        options=options,
        name=name,
        private_options=private_options,
        near_duplicates=threshold,
    )
