"""`prepare_dataset`: one front door over the source readers and the writer."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medft.errors import MedftError
from medft.prepare.brain_tumor import list_brain_tumor_44c
from medft.prepare.chestxray14 import list_chestxray14
from medft.prepare.csv_table import list_csv
from medft.prepare.dicom import list_dicom
from medft.prepare.folder import list_image_folder
from medft.prepare.images import ImageOptions
from medft.prepare.listing import SourceListing
from medft.prepare.writer import check_output_folder, write_dataset

SOURCES: dict[str, Callable[..., SourceListing]] = {
    "brain-tumor-44c": list_brain_tumor_44c,
    "chestxray14": list_chestxray14,
    "folder": list_image_folder,
    "csv": list_csv,
    "dicom": list_dicom,
}
# what a reader may take from the writer's options (the DICOM reader keeps its salt beside
# the output folder), and options never written to the report (a salt is a secret)
SHARED_WITH_READERS = ("output",)
SECRET_OPTIONS = ("id_salt",)


def prepare_dataset(
    source_type: str,
    output: str | Path,
    *,
    image_size: int | None = None,
    png_compression: int = 0,
    num_proc: int | None = None,
    overwrite: bool = False,
    **source_options: Any,
) -> dict[str, Any]:
    """List a source, read its images and save a `DatasetDict` to ``output``; returns the report.

    ``source_options`` go to the source's reader (``source=``, ``task=``,
    ``val_size=``, ...; see `SOURCES`).
    """
    if source_type not in SOURCES:
        raise MedftError(f"unknown source '{source_type}'; choose one of {', '.join(SOURCES)}.")
    if image_size is not None and image_size < 8:
        raise MedftError(f"--image-size must be at least 8 pixels, got {image_size}.")
    if not 0 <= png_compression <= 9:
        raise MedftError(f"--png-compression must be 0-9, got {png_compression}.")
    check_output_folder(Path(output).expanduser().resolve(), overwrite)  # fail before the listing
    reader = SOURCES[source_type]
    signature = inspect.signature(reader)
    shared = {key: output for key in SHARED_WITH_READERS if key in signature.parameters}
    bound = signature.bind(**source_options, **shared)
    bound.apply_defaults()
    listing = reader(**bound.arguments)
    options = {
        key: "(given, not recorded)" if key in SECRET_OPTIONS and value is not None else value
        for key, value in bound.arguments.items()
        if key not in shared
    }
    options = {key: str(v) if isinstance(v, Path) else v for key, v in options.items()}
    options |= {"image_size": image_size, "png_compression": png_compression}
    return write_dataset(
        listing,
        output,
        image_options=ImageOptions(image_size, png_compression, listing.dicom),
        num_proc=num_proc,
        overwrite=overwrite,
        options=options,
    )
