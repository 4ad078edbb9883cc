"""What a DICOM header may give the dataset, and nothing more: the privacy boundary of
`medft prepare dicom`.

A header is read here and reduced at once to a `Header`: the split group, patient and
study identifiers replaced by keyed one-way hashes (HMAC-SHA256, keyed by the salt),
an allow-list of technical tags, and, only where asked, the patient's age (capped at 90),
sex and age band. No other tag value (names, dates, institutions, accession numbers,
descriptions, private tags) leaves this module, so none reaches the dataset, the report,
the summary or a log. The salt is either given (``id_salt=`` from Python, a file named by
``--id-salt-file``, or the ``MEDFT_ID_SALT`` environment variable: never on the command
line, where ``ps`` and shell history show it) or drawn once and kept in a file beside the
output folder, outside what is pushed to the Hub, so that reruns give the same pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Value

from medft.age_bands import age_band, impossible_age
from medft.errors import MedftError
from medft.formats.dicom_reading import UnreadableDicom, number_of_frames, open_dicom, sop_class

SALT_SUFFIX = ".id-salt"
SALT_VARIABLE = "MEDFT_ID_SALT"
MIN_SALT_CHARS = 16
PSEUDONYM_CHARS = 16  # 64 bits of the HMAC: collisions are negligible for any archive
# column -> (DICOM keyword, feature): the technical tags kept; nothing else is
TECHNICAL_TAGS = {
    "modality": ("Modality", Value("string")),
    "view_position": ("ViewPosition", Value("string")),
    "body_part": ("BodyPartExamined", Value("string")),
    "rows": ("Rows", Value("int32")),
    "columns": ("Columns", Value("int32")),
    "bits_stored": ("BitsStored", Value("int32")),
    "photometric_interpretation": ("PhotometricInterpretation", Value("string")),
    "manufacturer_model": ("ManufacturerModelName", Value("string")),
}
OLDEST_AGE = 90  # ages above 89 identify people (HIPAA Safe Harbor): stored as 90
AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
DAYS_PER_UNIT = {"D": 1, "W": 7, "M": 365.25 / 12, "Y": 365.25}
SEXES = ("M", "F", "O")  # PatientSex's defined terms


def salt_file(output: Path) -> Path:
    """Where the drawn salt is kept: beside the output folder, not in it, so that neither
    ``--push-to-hub`` nor an upload of the folder takes it, and ``--overwrite`` keeps it."""
    return output.parent / f"{output.name}{SALT_SUFFIX}"


def given_salt(id_salt: str | None, id_salt_file: str | Path | None) -> tuple[str, str] | None:
    """(the salt, how it was given) from ``id_salt``, the file ``id_salt_file`` or the
    environment variable `SALT_VARIABLE`, in that order; None when none holds one."""
    if id_salt is not None and id_salt_file is not None:
        raise MedftError("give the salt one way: id_salt or --id-salt-file, not both.")
    if id_salt is not None:
        return id_salt, "given as id_salt"
    if id_salt_file is not None:
        path = Path(id_salt_file).expanduser()
        try:
            return path.read_text().strip(), "read from --id-salt-file"
        except OSError as error:
            raise MedftError(
                f"--id-salt-file {path} cannot be read ({error.strerror or error}); "
                "name a file holding the salt."
            ) from None
    if SALT_VARIABLE in os.environ:
        return os.environ[SALT_VARIABLE], f"read from {SALT_VARIABLE}"
    return None


def resolve_salt(
    id_salt: str | None, id_salt_file: str | Path | None, output: str | Path | None
) -> tuple[bytes, str]:
    """(the HMAC key, how it was chosen, for the report: never the key itself, nor a path)."""
    given = given_salt(id_salt, id_salt_file)
    if given is not None:
        salt, how = given
        if len(salt) < MIN_SALT_CHARS:
            raise MedftError(
                f"the salt ({how}) must be at least {MIN_SALT_CHARS} characters (a short salt "
                "can be guessed, and with it the patient IDs behind the pseudonyms)."
            )
        return salt.encode(), f"{how} (not recorded)"
    if output is None:
        raise MedftError(
            f"pseudonyms need a salt (--id-salt-file or {SALT_VARIABLE}), or an output folder "
            "to keep one beside."
        )
    path = salt_file(Path(output).expanduser().resolve())
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    salt = path.read_text().strip()
    if not salt:
        raise MedftError(f"{path} is empty; delete it (new pseudonyms) or restore its salt.")
    return salt.encode(), (
        f"drawn once and kept in {path.name} beside the dataset folder (private: it links "
        "pseudonyms to patient IDs; keep it for reruns to agree, delete it to unlink them for good)"
    )


@dataclass(frozen=True)
class Pseudonyms:
    """Keyed one-way hashes: the same value and key give the same pseudonym, and without the
    key a pseudonym cannot be traced back or confirmed by guessing the value."""

    key: bytes = field(repr=False)

    def __call__(self, kind: str, value: str) -> str:
        message = f"{kind}\0{value}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def written_years(value: Any) -> int | None:
    """A DICOM age string ('045Y', '006M', '010D') in whole years; None when missing or
    malformed."""
    match = AGE.match(str(value or ""))
    if not match:
        return None
    return int(int(match.group(1)) * DAYS_PER_UNIT[match.group(2)] / DAYS_PER_UNIT["Y"])


def age_in_years(value: Any) -> int | None:
    """A DICOM age string in whole years, 90 for any age above 89; None when missing,
    malformed or impossible (over 100: `medft.age_bands`)."""
    years = written_years(value)
    return None if years is None or impossible_age(years) else min(years, OLDEST_AGE)


def sex_of(value: Any) -> str | None:
    """PatientSex as M / F / O; None for anything else (empty, or not a defined term)."""
    sex = str(value or "").strip().upper()
    return sex if sex in SEXES else None


# column -> (feature, how it is read): what a header may tell of the patient, kept only where
# asked (--age, --subgroup-columns); ages go through `age_in_years`, so none is above 90
PATIENT_ATTRIBUTES: dict[str, tuple[Value, Callable[[Any], Any]]] = {
    "age": (Value("int32"), lambda ds: age_in_years(ds.get("PatientAge"))),
    "sex": (Value("string"), lambda ds: sex_of(ds.get("PatientSex"))),
    "age_band": (Value("string"), lambda ds: age_band(age_in_years(ds.get("PatientAge")))),
}
SUBGROUP_ATTRIBUTES = ("sex", "age_band")


def check_subgroup_columns(columns: Sequence[str]) -> list[str]:
    """The subgroup columns asked of a DICOM source, if each is one it may keep."""
    for column in columns:
        if column not in SUBGROUP_ATTRIBUTES:
            raise MedftError(
                f"--subgroup-columns {column!r} is not one a DICOM source can keep; choose from "
                f"{', '.join(SUBGROUP_ATTRIBUTES)} (PatientSex as M / F / O, PatientAge as a "
                "band): names, IDs, dates and other tags can identify a patient."
            )
    return list(dict.fromkeys(columns))


def column_features(attributes: Sequence[str]) -> dict[str, Value]:
    """The dataset's columns: identifiers, technical tags, and the patient ``attributes``."""
    features = {
        "image_id": Value("string"),
        "frame": Value("int32"),
        "patient_id": Value("string"),
        "study_id": Value("string"),
    }
    features |= {column: feature for column, (_, feature) in TECHNICAL_TAGS.items()}
    return features | {column: PATIENT_ATTRIBUTES[column][0] for column in attributes}


def technical_value(ds, keyword: str, feature: Value) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if feature.dtype == "int32":
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return str(value).strip() or None


@dataclass
class Header:
    """What one file's header contributes: its split group, pseudonyms and kept columns."""

    group: str
    grouped_by: str  # "patient", "study", or "file" when the header has neither ID
    frames: int
    columns: dict[str, Any]
    age_impossible: bool = False  # PatientAge is over 100: no age, no age band


def read_header(
    path: Path,
    file_key: str,
    force: bool,
    pseudonyms: Pseudonyms,
    attributes: Sequence[str] = (),
) -> Header:
    """The `Header` of one file, or raises `UnreadableDicom` (a file that is not DICOM or
    holds no image). ``file_key`` (the file's path in the source) names a file without IDs.
    Without a PatientID, the patient is the group's pseudonym (its study's, else its file's),
    so that every row has one. ``attributes`` are the `PATIENT_ATTRIBUTES` to keep."""
    ds = open_dicom(path, force=force, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise UnreadableDicom(f"holds no image:{sop_class(ds) or ' no image pixel module'}")
    patient = str(ds.get("PatientID") or "").strip()
    study = str(ds.get("StudyInstanceUID") or "").strip()
    patient_id = pseudonyms("patient", patient) if patient else None
    study_id = pseudonyms("study", study) if study else None
    if patient_id:
        group, grouped_by = f"patient {patient_id}", "patient"
    elif study_id:
        group, grouped_by, patient_id = f"study {study_id}", "study", study_id
    else:
        patient_id = pseudonyms("file", file_key)
        group, grouped_by = f"file {patient_id}", "file"
    columns = {"patient_id": patient_id, "study_id": study_id}
    columns |= {
        column: technical_value(ds, keyword, feature)
        for column, (keyword, feature) in TECHNICAL_TAGS.items()
    }
    columns |= {column: PATIENT_ATTRIBUTES[column][1](ds) for column in attributes}
    age_impossible = impossible_age(written_years(ds.get("PatientAge")))
    return Header(group, grouped_by, number_of_frames(ds), columns, age_impossible)
