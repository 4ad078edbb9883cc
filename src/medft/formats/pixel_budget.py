"""One pixel budget for every image medft decodes: a file whose header declares more pixels
is refused before any of them is decoded.

A few kilobytes can declare a huge image (a 1.6 MB RLE DICOM declaring 10000 x 10000, a
140 KB PNG declaring 12000 x 12000), and decoding costs memory by the declared size. The
budget, 50 megapixels per image (per DICOM frame: medft decodes one at a time), covers every
common 2-D modality: mammograms are 14-23 megapixels, computed radiography about 19, chest
films about 9, CT and MR slices under 1. The environment variable MEDFT_MAX_MEGAPIXELS raises
it for real larger scans or lowers it for a public server; it is read at every check, so
worker processes and tests see its current value.

Pillow's own check is kept in line: `Image.MAX_IMAGE_PIXELS` is set to the budget (Pillow
warns above it and refuses above twice it, for every image the process opens), and while
medft opens and decodes an image its warning is an error.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Iterator
from typing import IO

from PIL import Image

from medft.errors import MedftError

BUDGET_VARIABLE = "MEDFT_MAX_MEGAPIXELS"
DEFAULT_MEGAPIXELS = 50
PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")  # "Image size (144000000 pixels) exceeds ..."


class ImageTooLarge(ValueError):
    """An image over the pixel budget; a ValueError, so that every path reporting unreadable
    files reports and counts it as one."""


def max_megapixels() -> float:
    """The budget in megapixels: MEDFT_MAX_MEGAPIXELS, else 50."""
    given = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not given:
        return DEFAULT_MEGAPIXELS
    try:
        value = float(given)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise MedftError(
            f"{BUDGET_VARIABLE}={given!r} is not a positive number of megapixels; set it to "
            f"e.g. 200, or unset it for the default of {DEFAULT_MEGAPIXELS}."
        )
    return value


def max_pixels() -> int:
    return int(max_megapixels() * 1e6)


def too_large(size: str) -> ImageTooLarge:
    return ImageTooLarge(
        f"image too large to decode safely: {size} is over medft's budget of "
        f"{max_megapixels():g} megapixels; set {BUDGET_VARIABLE} to raise it for real large scans"
    )


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def check_pixels(width: int, height: int) -> None:
    """Raise `ImageTooLarge` when ``width`` x ``height`` is over the budget."""
    if width * height > max_pixels():
        raise too_large(f"{width} x {height} pixels ({megapixels(width * height)})")


def pillow_refusal(error: Exception) -> ImageTooLarge:
    """Pillow's bomb warning or error as `ImageTooLarge`, with the pixel count it reports."""
    found = PILLOW_PIXELS.search(str(error))
    if found is None:  # a reworded message: the size is not known, only that it is too large
        return too_large("its size")
    pixels = int(found.group(1))
    return too_large(f"{pixels} pixels ({megapixels(pixels)})")


@contextlib.contextmanager
def opened_image(source: str | os.PathLike | IO[bytes]) -> Iterator[Image.Image]:
    """`PIL.Image.open` under the budget: an image whose header declares more pixels is refused
    before decoding, and decoding it within the block raises `ImageTooLarge` where Pillow would
    only warn (a GIF or TIFF frame larger than the first)."""
    Image.MAX_IMAGE_PIXELS = max_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                yield image
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise pillow_refusal(error) from None
