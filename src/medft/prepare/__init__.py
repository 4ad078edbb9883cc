"""`prepare_dataset`: one front door over the source readers and the writer, and `SOURCES`,
the one registry of the sources `medft prepare` reads."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medft.config.prepare import (
    BrainTumorArguments,
    ChestXray14Arguments,
    CsvArguments,
    DicomArguments,
    FolderArguments,
    PrepareArguments,
)
from medft.errors import MedftError
from medft.near_duplicates import parse_threshold
from medft.prepare.brain_tumor import list_brain_tumor_44c
from medft.prepare.chestxray14 import list_chestxray14
from medft.prepare.csv_table import list_csv
from medft.prepare.dicom import list_dicom
from medft.prepare.folder import list_image_folder
from medft.prepare.images import ImageOptions
from medft.prepare.listing import SourceListing
from medft.prepare.private import KEPT_PRIVATELY
from medft.prepare.webdataset import rewrite_as_webdataset
from medft.prepare.writer import check_output_folder, write_dataset

# each source: the command's options (the reader's and `PrepareArguments`), and its reader
SOURCES: dict[str, tuple[type[PrepareArguments], Callable[[Any], SourceListing]]] = {
    "brain-tumor-44c": (BrainTumorArguments, list_brain_tumor_44c),
    "chestxray14": (ChestXray14Arguments, list_chestxray14),
    "folder": (FolderArguments, list_image_folder),
    "csv": (CsvArguments, list_csv),
    "dicom": (DicomArguments, list_dicom),
}
# options never written to the report (a salt is a secret); options that take a path are
# recorded in the private record instead (paths may name patients)
SECRET_OPTIONS = ("id_salt",)


def reader_of(options: PrepareArguments) -> Callable[[Any], SourceListing]:
    for kind, reader in SOURCES.values():
        if isinstance(options, kind):
            return reader
    raise MedftError(
        f"{type(options).__name__} is no source's options; give one of "
        f"{', '.join(kind.__name__ for kind, _ in SOURCES.values())}."
    )


def recorded_value(key: str, value: Any, paths: set[str]) -> Any:
    """An option's value as the report holds it."""
    if value is None:
        return None
    if key in SECRET_OPTIONS:
        return "(given, not recorded)"
    return KEPT_PRIVATELY if key in paths else value


def prepare_dataset(options: PrepareArguments) -> dict[str, Any]:
    """List a source, read its images and save a `DatasetDict` to ``options.output``; returns
    the report. ``options`` are a source's (`SOURCES`: `FolderArguments`, `CsvArguments`,
    ...); the report records the reader's and the image storage, and the private record the
    paths among them. Pushing to the Hub is the command's (`medft.prepare.hub.push_dataset`).
    """
    reader = reader_of(options)
    threshold = parse_threshold(options.near_duplicates)
    # fail before the listing
    check_output_folder(Path(options.output).expanduser().resolve(), options.overwrite)
    listing = reader(options)
    writer = {item.name for item in dataclasses.fields(PrepareArguments)}
    given = {item.name: getattr(options, item.name) for item in dataclasses.fields(options)
             if item.name not in writer}  # fmt: skip
    hints = typing.get_type_hints(type(options))
    paths = {key for key in given if Path in (hints[key], *typing.get_args(hints[key]))}
    recorded = {key: recorded_value(key, value, paths) for key, value in given.items()}
    recorded |= {"image_size": options.image_size, "png_compression": options.png_compression,
                 "near_duplicates": "off" if threshold is None else threshold}  # fmt: skip
    if options.format == "webdataset":
        recorded |= {"format": options.format, "shard_size": options.shard_size}
    report = write_dataset(
        listing,
        options.output,
        image_options=ImageOptions(options.image_size, options.png_compression, listing.dicom),
        num_proc=options.num_proc,
        overwrite=options.overwrite,
        options=recorded,
        name=options.name,
        private_options={
            key: str(Path(value).expanduser().resolve())
            for key, value in given.items()
            if key in paths and value is not None
        },
        near_duplicates=threshold,
    )
    if options.format == "webdataset":
        rewrite_as_webdataset(Path(options.output).expanduser().resolve(), options.shard_size)
    return report
