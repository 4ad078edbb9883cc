"""Small files whose headers declare huge images (decompression bombs), built without ever
holding their pixels: an RLE-compressed DICOM and a PNG of one constant grey."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

RLE_RUN = 128  # the longest run one PackBits header byte can repeat


def rle_row(columns: int, value: int) -> bytes:
    """One row of ``value`` as DICOM RLE (PackBits) runs: 2 bytes per 128 pixels."""
    full, rest = divmod(columns, RLE_RUN)
    row = bytes([257 - RLE_RUN, value]) * full
    return row + (bytes([257 - rest, value]) if rest else b"")


def rle_dicom(path: Path, rows: int, columns: int, value: int = 100) -> Path:
    """An 8-bit MONOCHROME2 RLE Lossless DICOM of ``rows`` x ``columns`` pixels of ``value``:
    one segment of about 2 bytes per 128 pixels (10000 x 10000: 1.6 MB)."""
    segment = rle_row(columns, value) * rows
    segment += b"\x00" * (len(segment) % 2)
    header = struct.pack("<16I", 1, 64, *[0] * 14)  # one segment, starting after the header

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([header + segment])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def constant_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit grey PNG of ``width`` x ``height`` black pixels, compressed one row at a time
    (12000 x 12000: about 140 KB on disk, 144 MB decoded)."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )
    return path
