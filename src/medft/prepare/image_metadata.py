"""JPEG and PNG bytes without what is not pixels (EXIF, XMP, IPTC, comments, text chunks),
losslessly: the compressed pixels are copied as they are.

Cameras, scanners and PACS viewers write patient names, dates and device serials into
these segments. Pillow cannot drop them without re-encoding (lossy for JPEG), and the
maintained library for it (pyexiv2) leaves PNG text chunks in place, so this filter keeps
an allow-list: the segments that decoding needs, plus colour (an ICC profile, Adobe's
colour transform), and drops everything else, including data after the end of the image.
A file it cannot follow gives None, and the caller re-encodes its decoded pixels instead.
"""

from __future__ import annotations

import re

JPEG_START = b"\xff\xd8"
JPEG_END = 0xD9
START_OF_SCAN = 0xDA
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length
APP0, APP2, APP14, COMMENT = 0xE0, 0xE2, 0xEE, 0xFE
APP_SEGMENTS = range(0xE0, 0xF0)
KEPT_APP_SEGMENTS = {  # marker: the identifiers kept (any other content of these is dropped)
    APP0: (b"JFIF\0", b"JFXX\0"),
    APP2: (b"ICC_PROFILE\0",),
    APP14: (b"Adobe",),
}
# in entropy-coded data, 0xFF is followed by 0x00 (a stuffed byte), RST0-7 or more 0xFF fill;
# any other byte after 0xFF starts the next marker
NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND"
PNG_KEPT_CHUNKS = frozenset({
    b"IHDR", b"PLTE", b"IDAT", b"IEND",  # the image
    b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP", b"mDCV", b"cLLI",  # colour
    b"bKGD", b"pHYs",  # background colour, pixel aspect
    b"acTL", b"fcTL", b"fdAT",  # APNG frames
})  # fmt: skip


def jpeg_without_metadata(data: bytes) -> bytes | None:
    """``data`` with APP segments other than JFIF, ICC and Adobe, and comments, removed
    (also those between the scans of a progressive JPEG); None if it is not a whole JPEG."""
    if not data.startswith(JPEG_START):
        return None
    kept = [JPEG_START]
    position = len(JPEG_START)
    while position < len(data):
        if data[position] != 0xFF:
            return None
        while position < len(data) and data[position] == 0xFF:  # fill bytes before a marker
            position += 1
        if position >= len(data):
            return None
        marker = data[position]
        position += 1
        if marker == JPEG_END:
            kept.append(b"\xff\xd9")
            return b"".join(kept)
        if marker in STANDALONE_MARKERS:
            kept.append(bytes((0xFF, marker)))
            continue
        end = position + int.from_bytes(data[position : position + 2], "big")
        if end <= position + 1 or end > len(data):
            return None
        if keeps_segment(marker, data[position + 2 : end]):
            kept.append(bytes((0xFF, marker)) + data[position:end])
        position = end
        if marker == START_OF_SCAN:
            found = NEXT_MARKER.search(data, position)
            if found is None:
                return None
            kept.append(data[position : found.start()])
            position = found.start()
    return None


def keeps_segment(marker: int, content: bytes) -> bool:
    if marker == COMMENT:
        return False
    if marker in APP_SEGMENTS:
        return content.startswith(KEPT_APP_SEGMENTS.get(marker, ()))
    return True


def png_without_metadata(data: bytes) -> bytes | None:
    """``data`` with only the chunks of `PNG_KEPT_CHUNKS` (text, EXIF, time and private
    chunks removed); None if it is not a whole PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept = [PNG_SIGNATURE]
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        kind = data[position + 4 : position + 8]
        end = position + 12 + int.from_bytes(data[position : position + 4], "big")
        if end > len(data):
            return None
        if kind in PNG_KEPT_CHUNKS:
            kept.append(data[position:end])
        if kind == PNG_END:
            return b"".join(kept)
        position = end
    return None


STRIPPERS = {
    "JPEG": jpeg_without_metadata,
    "MPO": jpeg_without_metadata,
    "PNG": png_without_metadata,
}


def without_metadata(data: bytes, image_format: str | None) -> bytes | None:
    """The file's bytes with only what decoding and colour need, for the formats whose
    pixels can be kept as they are (Pillow's ``format``: JPEG, MPO, PNG); None otherwise."""
    strip = STRIPPERS.get(image_format or "")
    return strip(data) if strip else None
