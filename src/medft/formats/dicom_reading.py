"""DICOM files read as a model sees them: found, opened, one frame decoded, made an image.

One reading for every command: `medft prepare dicom` (in its worker processes),
training (16-bit datasets are windowed by `to_model_image`, before the model's processor)
and the inference engine (predict, explain and evaluate on .dcm files). pydicom decodes,
with pylibjpeg's plugins for JPEG, JPEG-LS, JPEG 2000 and RLE, and its own functions
apply the modality LUT, the VOI LUT or window, the colour conversion and the palette;
`medft.formats.windowing` chooses which apply and maps their output to 8 (or 16) bits.

Only one frame is decoded (pydicom's ``pixel_array(ds, index=...)`` decodes the one frame
of native and encapsulated data alike), and only after its Rows x Columns are checked
against medft's pixel budget (`medft.formats.pixel_budget`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medft.formats.dicom_settings import DicomSettings
from medft.formats.pixel_budget import check_pixels
from medft.formats.windowing import colour_8bit, grey_8bit, grey_16bit

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
GREY = ("MONOCHROME1", "MONOCHROME2")
SAMPLES = (1, 3)  # samples per pixel of greyscale, and of colour and YBR
FRAME_GROUP_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


class UnreadableDicom(ValueError):
    """A file that cannot become an image; the message says why and names no patient data."""


# finding and opening files --------------------------------------------------------------------


def has_dicom_preamble(path: Path) -> bool:
    """True when the file has the 128-byte preamble and 'DICM' of a DICOM Part 10 file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: Path) -> bool:
    return path.suffix.lower() in DICOM_EXTENSIONS or has_dicom_preamble(path)


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log lines while reading: they quote element values,
    which can be patient data."""
    logger = logging.getLogger("pydicom")  # its decoders log to child loggers, which propagate
    disabled, propagate = logger.disabled, logger.propagate
    logger.disabled, logger.propagate = True, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled, logger.propagate = disabled, propagate


def safe_reason(error: Exception) -> str:
    """An error's type and first line with quoted text cut out (it may quote tag values)."""
    text = " ".join(str(error).split("\n")[0].split())
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def open_dicom(path: str | Path, force: bool = False, stop_before_pixels: bool = False):
    """The file's `pydicom.Dataset`. With ``force``, a file without a file meta header is
    read as pydicom guesses it, and its transfer syntax is the encoding pydicom found."""
    try:
        with quiet_pydicom():
            ds = dcmread(path, force=force, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise UnreadableDicom(
            "no DICOM file meta header: no 'DICM' preamble (--force reads such files where "
            "pydicom can)"
        ) from None
    except OSError as error:
        raise UnreadableDicom(f"cannot read file: {error.strerror or safe_reason(error)}") from None
    except Exception as error:  # pydicom raises many types for a damaged header
        raise UnreadableDicom(f"corrupt or truncated DICOM header: {safe_reason(error)}") from None
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding[0] is not None:
        implicit, little = ds.original_encoding
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = syntax if little else ExplicitVRBigEndian
    return ds


def sop_class(ds, before: str = " ") -> str:
    """The file's SOP class name ('RT Plan Storage', 'Media Storage Directory Storage'), after
    ``before``; '' when it has none."""
    uid = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    return f"{before}{uid.name}" if uid else ""


def number_of_frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def lift_frame_groups(ds, index: int) -> None:
    """Enhanced multi-frame files keep Rescale Slope / Intercept and Window Center / Width in
    functional groups (shared, then per frame), where pydicom's LUT functions do not look:
    copy frame ``index``'s values to the top level, the per-frame ones last so they win."""
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    for group in [*shared[:1], *per_frame[index : index + 1]]:
        for keyword in FRAME_GROUP_MACROS:
            if group.get(keyword):
                for element in group[keyword][0]:
                    ds[element.tag] = element


def frame_size(ds) -> tuple[int, int]:
    """(Columns, Rows) of the file's frames; `UnreadableDicom` when either is missing or 0,
    or the samples per pixel are not 1 or 3."""
    size = []
    for keyword in ("Columns", "Rows"):
        value = ds.get(keyword)
        if not isinstance(value, int) or not 0 < value < 65536:
            shown = "missing" if value is None else f"{str(value)[:20]!r}"
            raise UnreadableDicom(f"no usable image size: {keyword} is {shown} (1 to 65535)")
        size.append(value)
    samples = ds.get("SamplesPerPixel", 1)
    if samples not in SAMPLES:
        raise UnreadableDicom(f"unsupported Samples per Pixel: {str(samples)[:20]} (1 or 3)")
    return size[0], size[1]


def frame_for(ds, frames: str) -> int:
    """The frame `first` or `middle` picks ('all' reads every frame: the caller names one)."""
    return number_of_frames(ds) // 2 if frames == "middle" else 0


def decode_frame(ds, index: int) -> np.ndarray:
    """Frame ``index`` of the file's pixel data, decoded by pydicom (YBR converted to RGB)."""
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UnreadableDicom(f"holds no image: no pixel data{sop_class(ds, ' in a ')}")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    name = syntax.name if syntax else "unknown transfer syntax"
    try:
        with quiet_pydicom():
            return pixel_array(ds, index=index)  # this frame only, even if encapsulated
    except NotImplementedError:
        raise UnreadableDicom(
            f"cannot decode transfer syntax: {name} (no installed pydicom plugin decodes it)"
        ) from None
    except Exception as error:  # a damaged or truncated pixel stream
        raise UnreadableDicom(
            f"corrupt, truncated or undecodable pixel data: {name}, {safe_reason(error)}"
        ) from None


# the reading ----------------------------------------------------------------------------------


@dataclass
class DicomImage:
    image: Image.Image  # L or RGB (8 bits), or I;16 (16-bit storage of greyscale)
    photometric: str
    clipped: bool = False  # 16-bit storage: some values fell outside the 16 bits


def read_dicom(path: str | Path, settings: DicomSettings, frame: int | None = None) -> DicomImage:
    """One frame of a DICOM file as an image (``frame`` None: the one ``settings.frames``
    picks, the middle one for 'all'). Raises `UnreadableDicom` saying why not, or
    `ImageTooLarge` when the frame's Rows x Columns are over the pixel budget."""
    ds = open_dicom(path, force=settings.force)
    if "Rows" not in ds:
        raise UnreadableDicom(f"holds no image:{sop_class(ds) or ' no image pixel module'}")
    index = frame_for(ds, "middle" if settings.frames == "all" else settings.frames)
    index = index if frame is None else frame
    if index >= number_of_frames(ds):
        raise UnreadableDicom(f"no such frame: {index} (the file has {number_of_frames(ds)})")
    check_pixels(*frame_size(ds))
    pixels = decode_frame(ds, index)
    lift_frame_groups(ds, index)
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").upper()
    try:
        with quiet_pydicom():
            return pixels_to_image(pixels, ds, photometric, settings)
    except UnreadableDicom:
        raise
    except Exception as error:  # a LUT or window pydicom cannot apply
        raise UnreadableDicom(f"cannot apply its LUTs: {safe_reason(error)}") from None


def pixels_to_image(pixels: np.ndarray, ds, photometric: str, settings: DicomSettings):
    if photometric in GREY and pixels.ndim == 2:
        if settings.bit_depth == 16:
            stored, clipped = grey_16bit(pixels, ds, photometric == "MONOCHROME1")
            return DicomImage(Image.fromarray(stored), photometric, clipped)
        grey = grey_8bit(pixels, ds, settings.window)
        grey = 255 - grey if photometric == "MONOCHROME1" else grey
        return DicomImage(Image.fromarray(grey, mode="L"), photometric)
    if (photometric in COLOUR or photometric == "PALETTE COLOR") and pixels.ndim in (2, 3):
        rgb = colour_8bit(pixels, ds)
        if rgb.ndim == 3 and rgb.shape[-1] == 3:
            return DicomImage(Image.fromarray(rgb, mode="RGB"), photometric)
    raise UnreadableDicom(
        f"unsupported photometric interpretation: {photometric} ({pixels.ndim}-d pixels)"
    )
