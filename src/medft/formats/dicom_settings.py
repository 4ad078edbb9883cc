"""How DICOM files become images, and where that is kept: window presets, `DicomSettings`,
a model folder's ``dicom.json``, a prepared dataset's report.

Kept apart from the pixel reading (`medft.formats.dicom_reading`) so that the options and
recipes can check a window without importing pydicom.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medft.errors import MedftError
from medft.formats.prepared_report import read_report

# centre, width in Hounsfield units: the usual CT windows (Radiopaedia, "Windowing (CT)")
WINDOW_PRESETS = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
FRAME_CHOICES = ("first", "middle", "all")
BIT_DEPTHS = (8, 16)
SETTINGS_NAME = "dicom.json"


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (Hounsfield units for CT)."""

    center: float
    width: float


def parse_window(text: str | None, what: str = "--window") -> Window | None:
    """'lung' (a preset) or 'C,W' (centre, width) -> a `Window`; None stays None. ``what``
    names the option in the error."""
    if text is None:
        return None
    name = text.strip().lower()
    if name in WINDOW_PRESETS:
        return Window(*WINDOW_PRESETS[name])
    try:
        center, width = (float(part) for part in name.split(","))
    except ValueError:
        raise MedftError(
            f"{what} {text!r} is neither 'CENTER,WIDTH' (e.g. -600,1500) nor a preset "
            f"({', '.join(WINDOW_PRESETS)})."
        ) from None
    if width < 1:
        raise MedftError(f"{what} {text!r}: the width must be at least 1.")
    return Window(center, width)


@dataclass(frozen=True)
class DicomSettings:
    """How DICOM files become images. A model folder keeps them (``dicom.json``) so that
    predict reads new files as the training data was read."""

    window: Window | None = None  # overrides the files' own VOI LUT / window
    bit_depth: int = 8
    frames: str = "first"
    force: bool = False  # read files without a DICOM file meta header

    def __post_init__(self) -> None:
        if self.bit_depth not in BIT_DEPTHS:
            raise MedftError(f"--bit-depth must be 8 or 16, got {self.bit_depth}.")
        if self.frames not in FRAME_CHOICES:
            choices = ", ".join(FRAME_CHOICES)
            raise MedftError(f"--frames must be one of {choices}, got {self.frames!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DicomSettings:
        window = values.get("window")
        window = parse_window(window) if isinstance(window, str) else window
        if isinstance(window, dict):
            window = Window(window["center"], window["width"])
        return cls(window, int(values["bit_depth"]), values["frames"], bool(values["force"]))


def dataset_settings(dataset_name: str) -> DicomSettings | None:
    """The settings a dataset prepared by `medft prepare dicom` was read with (from its
    prepare_report.json); None for any other dataset, and for a Hub id."""
    folder = Path(dataset_name).expanduser()
    report = read_report(folder) if folder.is_dir() else None
    return DicomSettings.from_dict(report["dicom"]) if report and report.get("dicom") else None


def save_settings(folder: str | Path, settings: DicomSettings) -> Path:
    path = Path(folder) / SETTINGS_NAME
    path.write_text(json.dumps(settings.to_dict(), indent=2) + "\n")
    return path


def load_settings(folder: str | Path) -> DicomSettings | None:
    """The settings a model folder records (``dicom.json``); None if it has none."""
    path = Path(folder) / SETTINGS_NAME
    if not path.is_file():
        return None
    try:
        return DicomSettings.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise MedftError(f"{path} is not a valid DICOM settings file ({error}).") from None
