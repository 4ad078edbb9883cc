"""Stored images keep their pixels and lose what is not pixels: EXIF, XMP, comments, text."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image, ImageCms, PngImagePlugin

from medft.config.prepare import CsvArguments, FolderArguments
from medft.prepare import prepare_dataset
from medft.prepare.image_metadata import jpeg_without_metadata, png_without_metadata
from medft.prepare.images import read_image

TEXT = "Patient DOE^JOHN MRN1234567"
SECRETS = (b"DOE^JOHN", b"MRN1234567")
XMP = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    f'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:description="{TEXT}"/></rdf:RDF>'
    '</x:xmpmeta><?xpacket end="w"?>'
)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def pixels_of(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def exif_naming_the_patient() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010E] = TEXT  # ImageDescription
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + TEXT.encode()  # UserComment
    return exif


def scan(mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (24, 32, 3) if mode == "RGB" else (24, 32)
    return Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode)


def tagged_jpeg(seed: int = 0, progressive: bool = False) -> bytes:
    """A JPEG with EXIF, XMP, a comment and an ICC profile (and, progressive, a comment
    between its scans, and bytes after its end)."""
    buffer = io.BytesIO()
    scan(seed=seed).save(
        buffer,
        "JPEG",
        exif=exif_naming_the_patient(),
        xmp=XMP.encode(),
        comment=TEXT,
        icc_profile=ICC,
        progressive=progressive,
    )
    data = buffer.getvalue()
    if progressive:  # a comment segment before the second scan
        second_scan = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
        comment = b"\xff\xfe" + (len(TEXT) + 2).to_bytes(2, "big") + TEXT.encode()
        data = data[:second_scan] + comment + data[second_scan:] + TEXT.encode()
    return data


def tagged_png(mode: str = "RGB", seed: int = 0) -> bytes:
    """A PNG with tEXt, zTXt and iTXt chunks, EXIF, XMP and an ICC profile."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", TEXT)
    info.add_text("Author", TEXT, zip=True)
    info.add_itxt("Description", TEXT)
    info.add_itxt("XML:com.adobe.xmp", XMP)
    buffer = io.BytesIO()
    scan(mode, seed).save(
        buffer, "PNG", pnginfo=info, exif=exif_naming_the_patient(), icc_profile=ICC
    )
    return buffer.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_loses_exif_xmp_and_comments_and_keeps_its_pixels_and_profile(progressive):
    data = tagged_jpeg(progressive=progressive)
    assert all(secret in data for secret in SECRETS)
    stripped = jpeg_without_metadata(data)
    assert not any(secret in stripped for secret in SECRETS)
    assert np.array_equal(pixels_of(stripped), pixels_of(data))
    with Image.open(io.BytesIO(stripped)) as image:
        assert image.info["icc_profile"] == ICC and not image.getexif()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_png_loses_its_text_chunks_and_exif_and_keeps_its_pixels_and_profile(mode):
    data = tagged_png(mode)
    stripped = png_without_metadata(data)
    assert not any(secret in stripped for secret in SECRETS)
    assert np.array_equal(pixels_of(stripped), pixels_of(data))
    with Image.open(io.BytesIO(stripped)) as image:
        assert image.info["icc_profile"] == ICC and image.text == {}


def test_a_file_the_filter_cannot_follow_is_not_guessed_at():
    data = tagged_jpeg()
    assert jpeg_without_metadata(data[:-2]) is None  # no end of image
    assert jpeg_without_metadata(data[:40]) is None
    assert png_without_metadata(tagged_png()[:-12]) is None  # no IEND
    assert jpeg_without_metadata(b"GIF89a") is None and png_without_metadata(b"\xff\xd8") is None


def test_a_file_the_filter_cannot_follow_is_stored_as_its_pixels(tmp_path, monkeypatch):
    path = tmp_path / "odd.jpg"
    path.write_bytes(tagged_jpeg())
    monkeypatch.setattr("medft.prepare.images.without_metadata", lambda data, kind: None)
    result = read_image(path)
    assert result.reencoded and np.array_equal(pixels_of(result.data), pixels_of(path.read_bytes()))


@pytest.mark.parametrize("name", ["scan.webp", "scan.tif", "scan.gif", "scan.bmp"])
def test_other_formats_are_re_encoded_as_png_from_their_pixels(tmp_path, name):
    path = tmp_path / name
    settings = {  # what each format can carry (BMP: nothing)
        "scan.webp": {"lossless": True, "exif": exif_naming_the_patient(), "xmp": XMP.encode()},
        "scan.tif": {"exif": exif_naming_the_patient()},
        "scan.gif": {"comment": TEXT},
        "scan.bmp": {},
    }[name]
    scan("L" if name == "scan.gif" else "RGB").save(path, **settings)
    assert all(secret in path.read_bytes() for secret in SECRETS) or name == "scan.bmp"
    result = read_image(path)
    assert result.reencoded and result.data.startswith(b"\x89PNG")
    assert not any(secret in result.data for secret in SECRETS)
    assert np.array_equal(pixels_of(result.data), pixels_of(path.read_bytes()))


def test_an_image_without_metadata_is_stored_byte_for_byte(tmp_path):
    for name in ("plain.png", "plain.jpg"):
        scan().save(tmp_path / name)
        result = read_image(tmp_path / name)
        assert result.data == (tmp_path / name).read_bytes()
        assert not result.metadata_stripped and not result.reencoded


def write_tagged_sources(root: Path) -> list[tuple[str, str]]:
    """Two classes of tagged JPEGs and PNGs; (path in the source, class) of each."""
    files = []
    for label in ("benign", "malignant"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            seed = zlib.crc32(f"{label}{i}".encode())
            name = f"{label}/s{i}.jpg" if i % 2 else f"{label}/s{i}.png"
            data = tagged_jpeg(seed, progressive=i == 3) if i % 2 else tagged_png(seed=seed)
            (root / name).write_bytes(data)
            files.append((name, label))
    return files


@pytest.mark.parametrize("source_type", ["folder", "csv"])
def test_prepared_images_carry_no_metadata_and_the_same_pixels(tmp_path, source_type):
    raw = tmp_path / "raw"
    files = write_tagged_sources(raw)
    output = tmp_path / "out"
    if source_type == "folder":
        report = prepare_dataset(FolderArguments(output=output, source=raw, num_proc=1))
    else:
        table = tmp_path / "labels.csv"
        table.write_text("image,label\n" + "".join(f"{n},{c}\n" for n, c in files))
        report = prepare_dataset(
            CsvArguments(output=output, csv_path=table, image_root=raw, num_proc=1)
        )
    assert report["metadata_stripped"] == len(files) and report["reencoded"] == 0
    stored = [p.read_bytes() for p in output.rglob("*.arrow")]
    assert not any(secret in data for secret in SECRETS for data in stored)
    dataset = load_from_disk(str(output))
    for part in dataset.values():
        for image, image_id in zip(part.data.column("image").to_pylist(), part["image_id"]):
            original = (raw / image_id).read_bytes()
            assert np.array_equal(pixels_of(image["bytes"]), pixels_of(original)), image_id
            with Image.open(io.BytesIO(image["bytes"])) as decoded:
                assert decoded.info["icc_profile"] == ICC
