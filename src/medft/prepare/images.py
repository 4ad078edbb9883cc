"""Reading one image file into bytes ready to store: any mode in, L or RGB out.

This runs in the worker processes of `medft prepare`, so it takes and returns
plain values. An image already in L or RGB (or with an alpha channel that is
opaque everywhere), upright, and not to be resized is stored as its original
encoded bytes, less what is not pixels (`medft.prepare.image_metadata`: JPEG and PNG;
other formats are re-encoded); anything else is normalised and written as a lossless PNG.
DICOM files are read by `medft.formats.dicom_reading` (windowed to L, RGB, or 16-bit grey) and
stored as PNG.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from medft.formats.dicom_reading import UnreadableDicom, read_dicom
from medft.formats.dicom_settings import DicomSettings
from medft.formats.pixel_budget import ImageTooLarge, opened_image
from medft.formats.windowing import scale_to_8bit_array
from medft.near_duplicates import perceptual_hash
from medft.prepare.image_metadata import without_metadata

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail loudly, not decode grey

MODEL_MODES = ("L", "RGB")
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Downscaling first box-averages by a whole factor (Image.reduce), then resamples the
# rest bicubically: 1024 -> 256 in ~1 ms instead of ~4 ms for a full bicubic pass.
REDUCING_GAP = 1.0


class ImageOptions(NamedTuple):
    """How `medft prepare` stores images it has to re-encode (resized, rotated, 16-bit, ...).

    ``png_compression`` 0 (the default) writes uncompressed PNG: 2x faster to write
    and ~5x faster to decode in every training epoch than level 1, at raw pixel
    size on disk (256 x 256 grey: 64 KB). Levels 1-9 use zlib's run-length strategy,
    which zlib recommends for PNG data.
    """

    image_size: int | None = None
    png_compression: int = 0
    dicom: DicomSettings | None = None  # the files are DICOM, read with these settings
    hash_images: bool = False  # a perceptual hash of each stored image, for near-duplicates


STORE_AS_IS = ImageOptions()


class ImageResult(NamedTuple):
    """What became of one file: ``data`` to store, or ``error`` saying why not."""

    data: bytes | None
    error: str | None
    source_mode: str | None = None
    reencoded: bool = False
    notes: tuple[str, ...] = ()  # what the report should count, e.g. clipped 16-bit values
    metadata_stripped: bool = False  # the original bytes, less EXIF, comments, text chunks
    perceptual_hash: str | None = None  # of the stored image, when asked


def scale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float grey to 8 bits by the image's own value range (never clipped)."""
    return Image.fromarray(scale_to_8bit_array(np.asarray(image)), mode="L")


def flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto black (the background of a scan)."""
    grey = image.mode in ("LA", "La")
    if fully_opaque(image):  # nothing to composite: drop the alpha channel
        return image.convert("L" if grey else "RGB")
    rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return flat.convert("L" if grey else "RGB")


def fully_opaque(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema() == (255, 255)


def to_model_mode(image: Image.Image, keep_opaque_alpha: bool = False) -> Image.Image:
    """The same picture as L (greyscale) or RGB, whatever mode it was read in.

    With ``keep_opaque_alpha``, an RGBA / LA image whose alpha is 255 everywhere is
    returned as it is: its alpha carries nothing, and dropping it later (as every
    RGB conversion does) loses nothing, so its original bytes can be stored.
    """
    mode = image.mode
    if mode in MODEL_MODES or (keep_opaque_alpha and fully_opaque(image)):
        return image
    if mode in HIGH_DEPTH_MODES:
        return scale_to_8bit(image)
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        return to_model_mode(image.convert("RGBA" if "transparency" in image.info else "RGB"))
    if mode in ALPHA_MODES:
        return flatten_alpha(image)
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def exif_orientation(image: Image.Image) -> int:
    return image.getexif().get(ExifTags.Base.Orientation, 1)


def shorter_side_size(size: tuple[int, int], shorter_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is ``shorter_side``, aspect kept."""
    width, height = size
    scale = shorter_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Bicubic resize; 16-bit grey through 32-bit integers (Pillow resamples "I", not "I;16")."""
    if image.mode != "I;16":
        return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
    large = image.convert("I").resize(size, Image.Resampling.BICUBIC)
    return Image.fromarray(np.clip(np.asarray(large), 0, 65535).astype(np.uint16))


PNG_FORMATS = {"L": (8, 0), "RGB": (8, 2), "I;16": (16, 0)}  # mode: (bit depth, colour type)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def stored_png(image: Image.Image) -> bytes:
    """An uncompressed, unfiltered PNG of an L, RGB or 16-bit grey image.

    Pillow tries five filters on every row before compressing, even at level 0: 5.5 ms
    for a 512 x 512 grey image (11 ms at 16 bits) on a 2-core Xeon, where these bytes
    take 0.4 ms. Any PNG reader decodes them (the tests check Pillow's).
    """
    depth, colour = PNG_FORMATS[image.mode]
    pixels = np.asarray(image)
    pixels = pixels.astype(">u2") if depth == 16 else pixels
    rows = pixels.reshape(image.height, -1).view(np.uint8)
    scanlines = np.zeros((image.height, rows.shape[1] + 1), dtype=np.uint8)  # filter byte 0
    scanlines[:, 1:] = rows
    header = struct.pack(">IIBBBBB", image.width, image.height, depth, colour, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", header),
            png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 0)),
            png_chunk(b"IEND", b""),
        )
    )


def encode_png(image: Image.Image, compression: int) -> bytes:
    if compression == 0 and image.mode in PNG_FORMATS:
        return stored_png(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compression, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def hashed(image: Image.Image, options: ImageOptions) -> str | None:
    return perceptual_hash(image) if options.hash_images else None


def read_dicom_image(path: str | Path, options: ImageOptions, frame: int | None) -> ImageResult:
    """One frame of a DICOM file, windowed (or 16-bit), resized if asked, as PNG bytes."""
    try:
        read = read_dicom(path, options.dicom, frame)
    except (UnreadableDicom, ImageTooLarge) as error:
        return ImageResult(None, str(error))
    image = read.image
    if options.image_size is not None and min(image.size) > options.image_size:
        image = resized(image, shorter_side_size(image.size, options.image_size))
    notes = ("16-bit values clipped",) if read.clipped else ()
    encoded = encode_png(image, options.png_compression)
    return ImageResult(
        encoded,
        None,
        read.photometric,
        reencoded=True,
        notes=notes,
        perceptual_hash=hashed(image, options),
    )


def read_image(
    path: str | Path, options: ImageOptions = STORE_AS_IS, frame: int | None = None
) -> ImageResult:
    """Read and check one file (``frame``: of a multi-frame DICOM); resize so the shorter side
    is ``options.image_size`` if larger.

    Images are never upscaled: the training transforms resize anyway, and
    storing invented pixels only costs space.
    """
    if options.dicom is not None:
        return read_dicom_image(path, options, frame)
    image_size = options.image_size
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return ImageResult(None, f"cannot read file: {error.strerror or error}")
    if not data:
        return ImageResult(None, "empty file (0 bytes)")
    try:
        with opened_image(io.BytesIO(data)) as opened:
            source_mode, source_size = opened.mode, opened.size
            if image_size and opened.format == "JPEG":
                opened.draft(None, (image_size, image_size))
            opened.load()
            orientation = exif_orientation(opened)
            image = ImageOps.exif_transpose(opened) if orientation != 1 else opened
            stored_as_is = image_size is None and orientation == 1  # the original bytes
            image = to_model_mode(image, keep_opaque_alpha=stored_as_is)
            resize = image_size is not None and min(image.size) > image_size
            if resize:
                target = shorter_side_size(image.size, image_size)
                image = resized(image, target)
            unchanged = image is opened and image.size == source_size
            original = without_metadata(data, opened.format) if unchanged else None
            digest = hashed(image, options)
            if original is not None:  # JPEG or PNG: its own bytes, less what is not pixels
                stripped = original != data
                return ImageResult(
                    original, None, source_mode, metadata_stripped=stripped, perceptual_hash=digest
                )
            encoded = encode_png(image, options.png_compression)
            return ImageResult(encoded, None, source_mode, reencoded=True, perceptual_hash=digest)
    except UnidentifiedImageError:
        return ImageResult(None, "not an image: Pillow cannot identify the file format")
    except ImageTooLarge as error:
        return ImageResult(None, str(error))
    except (OSError, SyntaxError, ValueError) as error:
        return ImageResult(None, f"corrupt or truncated image: {error}")
