"""DICOM files: class subfolders of them, or a CSV of their paths and labels.

Files are recognised by a .dcm / .dicom / .dic extension or by the 'DICM' preamble
(PACS exports often have no extension); with ``force``, files without an extension,
or with a numeric one (files named by their UID), are tried too. Each header is read
once (`medft.prepare.dicom_privacy`, which keeps only pseudonyms and technical tags)
to group files by patient (PatientID, else StudyInstanceUID) for a patient-level
split, to count frames, and to pass over files that hold no image (structured
reports, RT plans, waveforms, DICOMDIR). Pixels are read later, by the writer's
workers (`medft.formats.dicom_reading`).

``image_id`` is a keyed hash of the file's path in the source, not the path: folder
and file names of PACS exports often hold patient names. The path behind each hash
reaches only the private record beside the output (`medft.prepare.private`), for
skipped files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from medft.config.prepare import DicomOptions
from medft.formats.dicom_reading import DICOM_EXTENSIONS, UnreadableDicom, has_dicom_preamble
from medft.formats.image_files import is_visible_file
from medft.prepare.csv_table import read_label_table
from medft.prepare.dicom_privacy import (
    Header,
    Pseudonyms,
    check_subgroup_columns,
    column_features,
    read_header,
    resolve_salt,
)
from medft.prepare.files import require_folder
from medft.prepare.folder import read_class_folders
from medft.prepare.listing import Example, SourceListing
from medft.prepare.splits import (
    SPLITS,
    assign_splits,
    groups_in_several_splits,
    joined_groups,
)
from medft.progress import progress_bar

WANTED = "DICOM (no .dcm extension, no 'DICM' preamble)"


@dataclass
class Candidate:
    """A file that may be DICOM, with its label and the split its folder or row gave it."""

    path: Path
    key: str  # its path in the source (as the CSV writes it): hashed into image_id, never kept
    label: int | list[int]
    given_split: str | None


def dicom_candidate(force: bool):
    """The test a file passes to be read as DICOM (with ``force``: any visible file without
    an extension, or with a numeric one as in '1.2.840.113619.2.55.504', too)."""

    def accept(path: Path) -> bool:
        if not is_visible_file(path):
            return False
        suffix = path.suffix.lower()
        bare = not suffix or suffix[1:].isdigit()
        return suffix in DICOM_EXTENSIONS or (force and bare) or has_dicom_preamble(path)

    return accept


def folder_candidates(root: Path, force: bool, ignored: Counter[str]):
    """(candidates, class names) of class subfolders, optionally in train/ val/ test/."""
    found = read_class_folders(
        root,
        ignored,
        "`medft prepare dicom --source` needs one subfolder of DICOM files per class (at "
        "least two), optionally inside train/ val/ test/ folders, or use --csv.",
        accept=dicom_candidate(force),
        wanted=WANTED,
    )
    candidates = [
        Candidate(path, path.relative_to(root).as_posix(), label, split)
        for path, label, split in zip(found.paths, found.labels, found.given_splits)
    ]
    return candidates, found.class_names


def frame_indices(header: Header, frames: str) -> list[int]:
    if frames == "all":
        return list(range(header.frames))
    return [header.frames // 2 if frames == "middle" else 0]


def list_dicom(options: DicomOptions) -> SourceListing:
    """List a DICOM source: labels from class folders (``source``) or a CSV (``csv_path``),
    split by patient, one example per frame read (see `DicomSettings`); ``age`` and
    ``subgroup_columns`` (sex, age_band) keep what a header tells of the patient."""
    subgroups = check_subgroup_columns(options.subgroup_columns)
    attributes = (["age"] if options.age else []) + subgroups
    force = options.force
    key, salt_note = resolve_salt(options.id_salt, options.id_salt_file, options.output)
    pseudonyms = Pseudonyms(key)
    ignored: Counter[str] = Counter()
    if options.source is not None:
        root = require_folder(options.source, "--source")
        candidates, label_names = folder_candidates(root, force, ignored)
        multi_label, origin = False, root
    else:
        table = read_label_table(options.csv_path, options)
        label_names, multi_label, origin = table.label_names, table.multi_label, table.csv_path
        candidates = []
        for row, label, split in zip(table.rows, table.labels, table.given_splits):
            written, path = table.image_of(row)
            candidates.append(Candidate(path, written, label, split))

    listing = SourceListing(
        source_type="dicom",
        source=str(Path(origin).resolve()),
        label_names=label_names,
        multi_label=multi_label,
        splits={},
        metadata_features=column_features(attributes),
        ignored=ignored,
        dicom=options.settings(),
        subgroup_columns=subgroups,
    )
    kept: list[tuple[Candidate, str, Header]] = []
    for candidate in progress_bar(candidates, desc="Reading DICOM headers", unit="file"):
        image_id = pseudonyms("file", candidate.key)
        listing.source_paths[image_id] = candidate.key
        if not candidate.path.is_file():
            listing.skip(image_id, "listed in the CSV but not found", candidate.given_split)
            continue
        try:
            header = read_header(candidate.path, candidate.key, force, pseudonyms, attributes)
        except UnreadableDicom as error:
            listing.skip(image_id, str(error), candidate.given_split)
            continue
        kept.append((candidate, image_id, header))

    given = [candidate.given_split for candidate, _, _ in kept]
    units = joined_groups(  # a file without IDs is keyed by its path as the CSV writes it
        [header.group for _, _, header in kept],
        [candidate.path.resolve() for candidate, _, _ in kept],
    )
    strata = listing.task.split_strata([candidate.label for candidate, _, _ in kept])
    assigned = assign_splits(given, options.sizes, labels=strata, groups=units, seed=options.seed)
    listing.carve_sizes, listing.carve_seed = options.sizes, options.seed
    for (candidate, image_id, header), stratum, split, unit in zip(
        kept, strata or repeat(None), assigned, units
    ):
        for frame in frame_indices(header, options.frames):
            metadata = {"image_id": image_id, "frame": frame, **header.columns}
            example = Example(
                candidate.path,
                candidate.label,
                metadata,
                frame,
                candidate.given_split,
                stratum,
                unit,
            )
            listing.splits[split].append(example)

    groups_by_split = {
        split: [header.group for (_, _, header), given in zip(kept, assigned) if given == split]
        for split in SPLITS
    }
    grouped_by = Counter(header.grouped_by for _, _, header in kept)
    listing.notes |= {
        "dicom_files": len(kept),
        "patients": len({h.group for _, _, h in kept if h.grouped_by == "patient"}),
        "files_without_patient_id_grouped_by_study": grouped_by["study"],
        "files_without_patient_or_study_id": grouped_by["file"],
        "patients_in_two_splits": len(groups_in_several_splits(groups_by_split)),
        "multi_frame_files": sum(1 for _, _, header in kept if header.frames > 1),
        "image_id": "a keyed hash of the file's path in the source (not the path)",
        "id_salt": salt_note,
    }
    if options.age or "age_band" in subgroups:  # impossible ages have neither an age nor a band
        listing.notes["ages_over_100_left_out"] = sum(h.age_impossible for _, _, h in kept)
    return listing
