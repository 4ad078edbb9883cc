import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medft.prepare.images import (
    ImageOptions,
    read_image,
    scale_to_8bit,
    shorter_side_size,
    stored_png,
)


def saved(tmp_path, image: Image.Image, name: str, **save_args) -> str:
    path = tmp_path / name
    image.save(path, **save_args)
    return str(path)


def decoded(result) -> Image.Image:
    assert result.error is None, result.error
    return Image.open(io.BytesIO(result.data))


def gradient(mode: str = "L", size=(40, 30)) -> Image.Image:
    array = np.tile(np.arange(size[0], dtype=np.uint8) * 6, (size[1], 1))
    return Image.fromarray(array, mode="L").convert(mode)


# WebP, TIFF, GIF and BMP are re-encoded as PNG, to drop their metadata: see
# test_prepare_image_metadata.py
@pytest.mark.parametrize("mode,name", [("L", "a.png"), ("RGB", "b.jpg")])
def test_model_ready_images_keep_their_original_bytes(tmp_path, mode, name):
    path = saved(tmp_path, gradient(mode), name)
    result = read_image(path)
    assert result.data == Path(path).read_bytes()
    assert not result.reencoded and result.source_mode == mode


def test_sixteen_bit_is_scaled_by_its_range_not_clipped(tmp_path):
    array = np.linspace(1000, 3000, 40 * 30).reshape(30, 40).astype(np.uint16)
    path = saved(tmp_path, Image.fromarray(array), "ct.png")
    image = decoded(read_image(path))
    pixels = np.asarray(image)
    assert image.mode == "L"
    assert pixels.min() == 0 and pixels.max() == 255  # clipping would give 255 everywhere
    assert len(np.unique(pixels)) > 200  # the range is spread, not collapsed


def test_constant_sixteen_bit_image_becomes_black():
    image = scale_to_8bit(Image.fromarray(np.full((4, 4), 700, dtype=np.uint16)))
    assert np.asarray(image).max() == 0


def test_rgba_is_flattened_onto_black(tmp_path):
    image = Image.new("RGBA", (10, 10), (200, 100, 50, 255))
    image.putpixel((0, 0), (255, 255, 255, 0))
    result = read_image(saved(tmp_path, image, "x.png"))
    flat = decoded(result)
    assert flat.mode == "RGB" and result.reencoded
    assert flat.getpixel((0, 0)) == (0, 0, 0)
    assert flat.getpixel((5, 5)) == (200, 100, 50)


def test_opaque_alpha_keeps_the_original_bytes_unless_resized(tmp_path):
    path = saved(tmp_path, gradient("RGBA"), "opaque.png")
    result = read_image(path)
    assert result.data == Path(path).read_bytes() and not result.reencoded
    assert result.source_mode == "RGBA"
    assert decoded(read_image(path, ImageOptions(image_size=16))).mode == "RGB"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated, so re-encoded: then the alpha goes like any other
    rotated = read_image(saved(tmp_path, gradient("RGBA"), "rotated.png", exif=exif))
    assert rotated.reencoded and decoded(rotated).mode == "RGB"


def test_palette_with_transparency_and_grey_alpha(tmp_path):
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert decoded(read_image(saved(tmp_path, palette, "p.png", transparency=0))).mode == "RGB"
    grey_alpha = Image.new("LA", (8, 8), (120, 128))  # half transparent: flattened
    assert decoded(read_image(saved(tmp_path, grey_alpha, "la.png"))).mode == "L"


def test_cmyk_and_bilevel_become_rgb_and_grey(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    assert decoded(read_image(saved(tmp_path, cmyk, "c.jpg"))).mode == "RGB"
    bilevel = Image.new("1", (8, 8), 1)
    assert decoded(read_image(saved(tmp_path, bilevel, "b.png"))).mode == "L"


def test_exif_orientation_is_applied(tmp_path):
    image = gradient("RGB", size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    result = read_image(saved(tmp_path, image, "rotated.jpg", exif=exif))
    assert decoded(result).size == (20, 40)
    assert result.reencoded


def test_resize_keeps_aspect_and_never_upscales(tmp_path):
    big = saved(tmp_path, gradient("L", size=(400, 200)), "big.jpg", quality=95)
    assert decoded(read_image(big, ImageOptions(image_size=64))).size == (128, 64)
    small = saved(tmp_path, gradient("L", size=(40, 30)), "small.png")
    result = read_image(small, ImageOptions(image_size=64))
    assert decoded(result).size == (40, 30) and not result.reencoded
    assert shorter_side_size((1024, 1024), 256) == (256, 256)


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"plain text, not pixels", "not an image"),
    ],
)
def test_bad_files_give_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    result = read_image(str(path))
    assert result.data is None and result.error.startswith(reason)


def test_truncated_image_is_reported(tmp_path):
    data = Path(saved(tmp_path, gradient("RGB", size=(200, 200)), "full.jpg")).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    result = read_image(str(tmp_path / "cut.jpg"))
    assert result.data is None and "truncated" in result.error


def test_missing_file_is_reported(tmp_path):
    assert read_image(str(tmp_path / "nope.png")).error.startswith("cannot read file")


def test_png_compression_of_re_encoded_images(tmp_path):
    path = saved(tmp_path, gradient("L", size=(400, 300)), "big.png")
    stored = read_image(path, ImageOptions(image_size=64))
    small = read_image(path, ImageOptions(image_size=64, png_compression=9))
    assert decoded(stored).tobytes() == decoded(small).tobytes()  # lossless either way
    assert len(small.data) < len(stored.data) / 4


@pytest.mark.parametrize(
    "mode,shape,dtype",
    [("L", (7, 5), np.uint8), ("RGB", (7, 5, 3), np.uint8), ("I;16", (7, 5), np.uint16)],
)
def test_uncompressed_png_is_written_without_pillow_and_read_back_exactly(mode, shape, dtype):
    pixels = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    data = stored_png(Image.fromarray(pixels))
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode) == ("PNG", mode)
        assert np.array_equal(np.asarray(image), pixels)
