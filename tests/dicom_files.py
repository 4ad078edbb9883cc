"""Real DICOM files that pydicom's wheel ships, and copies of them with edited tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array


def pydicom_file(name: str) -> Path:
    """A file of pydicom's test data, never downloaded (the wheel ships these)."""
    path = get_testdata_file(name, download=False)
    assert path, f"the installed pydicom no longer ships {name}"
    return Path(path)


def dicom_copy(name: str, target: Path, **tags: Any) -> Path:
    """``name`` saved at ``target`` with ``tags`` set (a value of None deletes the tag)."""
    ds = pydicom.dcmread(pydicom_file(name))
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def without_meta(name: str, target: Path) -> Path:
    """``name`` written as a bare dataset: no preamble, no 'DICM', no file meta header."""
    ds = pydicom.dcmread(pydicom_file(name))
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return target


def expected_grey(path: Path, frame: int | None = None, **tags: Any) -> np.ndarray:
    """The 8-bit image the standard's pipeline gives, by pydicom's own functions: modality
    LUT, then VOI LUT / window (``tags`` may set WindowCenter / WindowWidth), scaled from the
    range pydicom's output can take to 0-255; min-max without a window; MONOCHROME1 inverted.
    A float array: compare within half a grey level."""
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    values = apply_modality_lut(pixel_array(ds, index=frame), ds)
    if ds.get("VOILUTSequence"):
        low, high = 0, 2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
        out = apply_voi_lut(values.astype(np.int64), ds)
    elif "WindowCenter" in ds:
        low, high = apply_voi_lut(np.array([-1e12, 1e12]), ds)  # the output range pydicom uses
        out = apply_voi_lut(values, ds)
    else:
        low, high, out = values.min(), values.max(), values
    scaled = (np.asarray(out, dtype=np.float64) - low) * (255.0 / (high - low))
    return 255 - scaled if ds.PhotometricInterpretation == "MONOCHROME1" else scaled


def assert_close_to(image: Any, expected: np.ndarray) -> None:
    """``image`` is ``expected`` rounded: within half a grey level everywhere."""
    pixels = np.asarray(image, dtype=np.float64)
    assert pixels.shape == expected.shape
    assert np.abs(pixels - expected).max() <= 0.5 + 1e-6
