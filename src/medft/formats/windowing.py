"""DICOM pixel values as a model sees them: modality LUT, VOI LUT or window, MONOCHROME1, colour.

Greyscale, in order: the modality LUT (Rescale Slope / Intercept, or a Modality LUT
Sequence: `apply_modality_lut`); then a `--window` if given, else the file's VOI LUT
Sequence (`apply_voi`), else its first Window Center / Width (`apply_windowing`),
else the image's own value range (min-max); MONOCHROME1 is inverted last, so that
high values are bright as in MONOCHROME2. pydicom's functions are evaluated once per
stored value in the image's range and looked up per pixel through an index of 8 or 16
bits a pixel: the same values about 4x faster than applying them to every pixel, and
no float copy of the image (a 4000 x 4000 16-bit frame costs 3 bytes a pixel beyond its
decoded array, where an index of 64 bits and float images cost 9 windowed, 24 min-max).

16-bit storage (`bit_depth` 16) keeps the modality values instead (Hounsfield units
for CT), as ``value + 32768`` in a 16-bit grey image, rounded to integers; a window,
or else min-max, is applied when the image is read for a model (`to_model_image`).

Any other image of more than 8 bits (a 16-bit PNG, a float TIFF) is scaled by its own
range (min-max) when read for a model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing

from medft.formats.dicom_settings import DicomSettings, Window

OFFSET_16BIT = 32768  # a 16-bit stored image holds the modality value + 32768
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
LOOKUP_MAX_VALUES = 1 << 17  # stored-value ranges up to this size go through a lookup table


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
