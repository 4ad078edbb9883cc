"""DICOM pixels as a model sees them: modality LUT, VOI LUT or window, MONOCHROME1, colour, frames.

One reading for every command: `medft prepare dicom` (in its worker processes),
training (16-bit datasets are windowed here, before the model's processor) and the
inference engine (predict, explain and evaluate on .dcm files). pydicom decodes,
with pylibjpeg's plugins for JPEG, JPEG-LS, JPEG 2000 and RLE, and its own functions
apply the modality LUT, the VOI LUT or window, the colour conversion and the palette;
this module chooses which apply and maps their output to 8 (or 16) bits.

Greyscale, in order: the modality LUT (Rescale Slope / Intercept, or a Modality LUT
Sequence: `apply_modality_lut`); then a `--window` if given, else the file's VOI LUT
Sequence (`apply_voi`), else its first Window Center / Width (`apply_windowing`),
else the image's own value range (min-max); MONOCHROME1 is inverted last, so that
high values are bright as in MONOCHROME2. pydicom's functions are evaluated once per
stored value in the image's range and looked up per pixel through an index of 8 or 16
bits a pixel: the same values about 4x faster than applying them to every pixel, and
no float copy of the image (a 4000 x 4000 16-bit frame costs 3 bytes a pixel beyond its
decoded array, where an index of 64 bits and float images cost 9 windowed, 24 min-max).

Only one frame is decoded (pydicom's ``pixel_array(ds, index=...)`` decodes the one frame
of native and encapsulated data alike), and only after its Rows x Columns are checked
against medft's pixel budget (`medft.pixel_budget`).

16-bit storage (`bit_depth` 16) keeps the modality values instead (Hounsfield units
for CT), as ``value + 32768`` in a 16-bit grey image, rounded to integers; a window,
or else min-max, is applied when the image is read for a model (`to_model_image`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    pixel_array,
)
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medft.dicom_settings import DicomSettings, Window
from medft.pixel_budget import check_pixels

OFFSET_16BIT = 32768  # a 16-bit stored image holds the modality value + 32768
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
GREY = ("MONOCHROME1", "MONOCHROME2")
SAMPLES = (1, 3)  # samples per pixel of greyscale, and of colour and YBR
FRAME_GROUP_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")
LOOKUP_MAX_VALUES = 1 << 17  # stored-value ranges up to this size go through a lookup table


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


# greyscale -------------------------------------------------------------------------------------


def value_table(stored: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]):
    """``transform`` of each stored value in the image's range, and each pixel's offset into
    that table (8, 16 or 32 bits); for an image that is not integers of a moderate range,
    ``transform(stored)`` and None."""
    if stored.dtype.kind not in "iu" or stored.size == 0:
        return transform(stored), None
    low, high = int(stored.min()), int(stored.max())
    if high - low >= LOOKUP_MAX_VALUES:
        return transform(stored), None
    offsets = np.subtract(
        stored, np.array(low, stored.dtype), dtype=np.min_scalar_type(high - low), casting="unsafe"
    )  # wraps around in unsigned arithmetic to the right offset, whatever the sign
    return transform(np.arange(low, high + 1, dtype=np.int64)), offsets


def per_pixel(table: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    return table if offsets is None else table[offsets]


def occurring(table: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """The entries of ``table`` that some pixel takes."""
    if offsets is None:
        return table
    taken = np.zeros(len(table), dtype=bool)
    taken[offsets] = True
    return table[taken]


def through_lookup(stored: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]):
    """``transform(stored)`` for an element-wise transform, evaluated once per stored value
    in the image's range and looked up per pixel (integer images of a moderate range)."""
    return per_pixel(*value_table(stored, transform))


def scale_to_8bit_array(
    stored: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] = np.asarray
) -> np.ndarray:
    """``transform(stored)`` to 0-255 by the range of its values (min-max), never clipped; a
    constant image is black."""
    table, offsets = value_table(stored, transform)
    table = np.asarray(table, dtype=np.float64)
    values = occurring(table, offsets)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(stored.shape, dtype=np.uint8)
    scaled = np.rint((np.clip(table, low, high) - low) * (255.0 / (high - low)))
    return per_pixel(scaled.astype(np.uint8), offsets)


def display_dataset(window: Window, function: str = "LINEAR"):
    """A dataset whose windowing output range is 0-255, so `apply_windowing` gives 8 bits."""
    display = Dataset()
    display.PhotometricInterpretation = "MONOCHROME2"
    display.BitsStored, display.PixelRepresentation = 8, 0
    display.WindowCenter, display.WindowWidth = window.center, window.width
    display.VOILUTFunction = function
    return display


def windowed_8bit(values: np.ndarray, window: Window, function: str = "LINEAR") -> np.ndarray:
    return np.rint(apply_windowing(values, display_dataset(window, function))).astype(np.uint8)


def first_value(value) -> float:
    """The first of a multi-valued element (Window Center may hold several), as a number."""
    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)


def file_window(ds) -> tuple[Window, str] | None:
    """The file's first Window Center / Width and its VOI LUT function, if it has them."""
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return None
    width = first_value(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
    if width <= 0 or (function == "LINEAR" and width < 1):
        return None  # an invalid window is no window
    return Window(first_value(ds.WindowCenter), width), function


def grey_8bit(stored: np.ndarray, ds, window: Window | None) -> np.ndarray:
    """Modality LUT, then ``window`` or the file's VOI LUT / window or min-max, in 8 bits."""

    def modality(values: np.ndarray) -> np.ndarray:
        return apply_modality_lut(values, ds)

    if window is not None:
        return through_lookup(stored, lambda v: windowed_8bit(modality(v), window))
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])

        def voi(values: np.ndarray) -> np.ndarray:
            lut_input = modality(values)
            lut_input = lut_input.astype(np.int64) if np.all(lut_input % 1 == 0) else lut_input
            output = apply_voi(lut_input, ds).astype(np.float64)
            return np.rint(output * (255.0 / (2**bits - 1))).astype(np.uint8)

        return through_lookup(stored, voi)
    own = file_window(ds)
    if own is not None:
        return through_lookup(stored, lambda v: windowed_8bit(modality(v), *own))
    return scale_to_8bit_array(stored, modality)


def modality_range(ds) -> tuple[float, float]:
    """The modality values the stored bits can hold (Bits Stored, Pixel Representation)."""
    bits = int(ds.get("BitsStored") or 16)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    values = apply_modality_lut(stored, ds)
    return float(np.min(values)), float(np.max(values))


def grey_16bit(stored: np.ndarray, ds, monochrome1: bool) -> tuple[np.ndarray, bool]:
    """Modality values + 32768 as uint16 (MONOCHROME1 inverted within the range its bits can
    hold); and whether any value fell outside the 16 bits and was clipped."""

    def shifted(values: np.ndarray) -> np.ndarray:
        values = apply_modality_lut(values, ds)
        if monochrome1:
            low, high = modality_range(ds)
            values = (low + high) - np.asarray(values, dtype=np.float64)
        return np.rint(values) + OFFSET_16BIT

    table, offsets = value_table(stored, shifted)
    values = occurring(table, offsets)
    clipped = bool(values.min() < 0 or values.max() > 65535)
    return per_pixel(np.clip(table, 0, 65535).astype(np.uint16), offsets), clipped


def window_16bit(image: Image.Image, window: Window | None) -> Image.Image:
    """A 16-bit stored image (modality value + 32768) to 8 bits: ``window``, else min-max."""
    stored = np.asarray(image)
    if window is None:
        return Image.fromarray(scale_to_8bit_array(stored), mode="L")
    pixels = through_lookup(stored, lambda v: windowed_8bit(v - OFFSET_16BIT, window))
    return Image.fromarray(pixels, mode="L")


def to_model_image(image: Image.Image, settings: DicomSettings | None = None) -> Image.Image:
    """A stored image ready for the model's processor: a 16-bit DICOM image windowed with the
    settings, any other 16-bit / 32-bit / float image scaled by its own range; others as given."""
    if image.mode not in HIGH_DEPTH_MODES:
        return image
    if settings is not None and settings.bit_depth == 16:
        return window_16bit(image, settings.window)
    return Image.fromarray(scale_to_8bit_array(np.asarray(image)), mode="L")


# colour ----------------------------------------------------------------------------------------


def colour_8bit(pixels: np.ndarray, ds) -> np.ndarray:
    """RGB in 8 bits: palettes through pydicom's `apply_color_lut`, deeper samples scaled."""
    bits = int(ds.get("BitsStored") or 8)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
        bits = 16 if pixels.dtype == np.uint16 else 8
    if bits <= 8:
        return pixels.astype(np.uint8)
    scale = 255.0 / (2**bits - 1)
    return through_lookup(pixels, lambda v: np.rint(v * scale).astype(np.uint8))


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
