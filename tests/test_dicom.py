"""medft.formats.dicom_reading and .windowing (and their settings): a DICOM frame -> the image
a model sees, checked against pydicom's own functions."""

import re

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, pixel_array
from pydicom.sequence import Sequence

import medft.formats.dicom_reading
from medft.errors import MedftError
from medft.formats.dicom_reading import UnreadableDicom, is_dicom_file, read_dicom
from medft.formats.dicom_settings import (
    WINDOW_PRESETS,
    DicomSettings,
    Window,
    load_settings,
    parse_window,
    save_settings,
)
from medft.formats.pixel_budget import ImageTooLarge
from medft.formats.windowing import OFFSET_16BIT, to_model_image
from tests.dicom_files import assert_close_to, dicom_copy, expected_grey, pydicom_file, without_meta
from tests.oversized import rle_dicom

EIGHT_BIT = DicomSettings()


def read_pixels(path, settings=EIGHT_BIT, **options) -> np.ndarray:
    return np.asarray(read_dicom(path, settings, **options).image)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "JPGExtended.dcm",
    ],
)
def test_grey_files_follow_the_modality_lut_and_their_own_window(name):
    path = pydicom_file(name)
    assert_close_to(read_dicom(path, EIGHT_BIT).image, expected_grey(path))


def test_compressed_copies_read_like_the_uncompressed_file():
    plain = np.asarray(read_dicom(pydicom_file("MR_small.dcm"), EIGHT_BIT).image)
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        assert np.array_equal(np.asarray(read_dicom(pydicom_file(name), EIGHT_BIT).image), plain)


def test_min_max_scaling_is_exactly_the_rounded_linear_map(tmp_path):
    scaled = dicom_copy("CT_small.dcm", tmp_path / "scaled.dcm", RescaleSlope=0.37)
    for path in (pydicom_file("CT_small.dcm"), scaled):
        ds = pydicom.dcmread(path)
        values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
        low, high = values.min(), values.max()
        expected = np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
        assert np.array_equal(read_pixels(path), expected)


def test_without_a_window_the_modality_values_are_scaled_by_their_range():
    path = pydicom_file("CT_small.dcm")  # Rescale Intercept -1024, no Window Center / Width
    assert "WindowCenter" not in pydicom.dcmread(path)
    image = read_dicom(path, EIGHT_BIT).image
    assert_close_to(image, expected_grey(path))
    assert np.asarray(image).min() == 0 and np.asarray(image).max() == 255


@pytest.mark.parametrize("preset", list(WINDOW_PRESETS))
def test_a_window_option_overrides_the_files_own(preset):
    path = pydicom_file("MR_small.dcm")  # its own window: 600 / 1600
    center, width = WINDOW_PRESETS[preset]
    image = read_dicom(path, DicomSettings(window=parse_window(preset))).image
    assert_close_to(image, expected_grey(path, WindowCenter=center, WindowWidth=width))


def test_window_parsing_and_presets():
    assert parse_window("lung") == Window(-600, 1500)
    assert parse_window(" Brain ") == Window(40, 80)
    assert parse_window("-600,1500") == Window(-600, 1500)
    assert parse_window(None) is None
    for bad in ("lungs", "40", "40,0", "a,b"):
        with pytest.raises(MedftError, match="--window"):
            parse_window(bad)


def test_monochrome1_is_inverted_so_that_bone_is_bright(tmp_path):
    mono1 = {"PhotometricInterpretation": "MONOCHROME1"}
    inverted = dicom_copy("MR_small.dcm", tmp_path / "m1.dcm", **mono1)
    image = read_pixels(inverted)
    plain = read_pixels(pydicom_file("MR_small.dcm"))
    assert np.array_equal(image, 255 - plain)
    assert_close_to(image, expected_grey(inverted))


def test_a_voi_lut_sequence_is_preferred_to_the_window(tmp_path):
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", [round((i / 4095) ** 0.5 * 65535) for i in range(4096)])
    path = dicom_copy("MR_small.dcm", tmp_path / "voi.dcm", VOILUTSequence=Sequence([item]))
    image = read_dicom(path, EIGHT_BIT).image
    assert_close_to(image, expected_grey(path))
    assert not np.array_equal(np.asarray(image), read_pixels(pydicom_file("MR_small.dcm")))


def test_enhanced_multi_frame_values_in_functional_groups_apply(tmp_path):
    """Rescale in the shared functional group, a window in the frame's own: as if top-level."""
    rescale, window = Dataset(), Dataset()
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = -1024, 1, "HU"
    window.WindowCenter, window.WindowWidth = 40, 400
    shared, frame = Dataset(), Dataset()
    shared.PixelValueTransformationSequence = Sequence([rescale])
    frame.FrameVOILUTSequence = Sequence([window])
    enhanced = dicom_copy(
        "CT_small.dcm",
        tmp_path / "enhanced.dcm",
        RescaleIntercept=None,
        RescaleSlope=None,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence([frame]),
    )
    expected = expected_grey(pydicom_file("CT_small.dcm"), WindowCenter=40, WindowWidth=400)
    assert_close_to(read_dicom(enhanced, EIGHT_BIT).image, expected)


def test_colour_files_come_out_rgb():
    for name in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_dcmtk.dcm"):  # YBR_FULL(_422)
        path = pydicom_file(name)
        image = read_dicom(path, EIGHT_BIT).image
        assert image.mode == "RGB"
        assert np.array_equal(np.asarray(image), pixel_array(path))
    raw = pixel_array(pydicom_file("SC_ybr_full_422_uncompressed.dcm"), raw=True)
    converted = convert_color_space(raw, "YBR_FULL", "RGB")
    image = read_dicom(pydicom_file("SC_ybr_full_422_uncompressed.dcm"), EIGHT_BIT).image
    assert np.array_equal(np.asarray(image), converted)
    # the same picture stored losslessly as RGB: the JPEG YBR copy decodes close to it
    reference = pixel_array(pydicom_file("SC_rgb_rle.dcm")).astype(float)
    lossy = np.asarray(read_dicom(pydicom_file("SC_rgb_dcmtk_+eb+cy+np.dcm"), EIGHT_BIT).image)
    assert np.abs(lossy - reference).mean() < 3


def test_palette_colour_and_sixteen_bit_rgb():
    path = pydicom_file("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    expected = apply_color_lut(ds.pixel_array, ds).astype(float) * (255 / 65535)
    assert_close_to(read_dicom(path, EIGHT_BIT).image, expected)
    deep = pydicom_file("SC_rgb_rle_16bit.dcm")
    assert_close_to(read_dicom(deep, EIGHT_BIT).image, pixel_array(deep) * (255 / 65535))


def test_frames_first_middle_and_a_named_one():
    path = pydicom_file("examples_ybr_color.dcm")  # 30 frames
    frames = pixel_array(path)
    assert np.array_equal(np.asarray(read_dicom(path, EIGHT_BIT).image), frames[0])
    middle = read_dicom(path, DicomSettings(frames="middle")).image
    assert np.array_equal(np.asarray(middle), frames[15])
    assert np.array_equal(np.asarray(read_dicom(path, EIGHT_BIT, frame=7).image), frames[7])
    with pytest.raises(UnreadableDicom, match="no such frame: 30"):
        read_dicom(path, EIGHT_BIT, frame=30)


def test_sixteen_bits_keep_the_modality_values_and_window_later():
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    read = read_dicom(path, DicomSettings(bit_depth=16))
    assert read.image.mode == "I;16" and not read.clipped
    hounsfield = apply_modality_lut(ds.pixel_array, ds)
    assert np.array_equal(np.asarray(read.image), np.rint(hounsfield) + OFFSET_16BIT)
    lung = DicomSettings(window=parse_window("lung"), bit_depth=16)
    later = to_model_image(read.image, lung)  # what training and predict do
    now = read_dicom(path, DicomSettings(window=parse_window("lung"))).image  # 8-bit at prepare
    assert later.mode == "L" and np.array_equal(np.asarray(later), np.asarray(now))
    assert_close_to(later, expected_grey(path, WindowCenter=-600, WindowWidth=1500))
    unwindowed = to_model_image(read.image, DicomSettings(bit_depth=16))
    assert_close_to(unwindowed, expected_grey(path))  # min-max, as at 8 bits


def test_sixteen_bit_monochrome1_is_inverted_within_its_range(tmp_path):
    mono1 = {"PhotometricInterpretation": "MONOCHROME1"}
    path = dicom_copy("MR_small.dcm", tmp_path / "m1.dcm", **mono1)
    stored = np.asarray(read_dicom(path, DicomSettings(bit_depth=16)).image).astype(int)
    plain = np.asarray(read_dicom(pydicom_file("MR_small.dcm"), DicomSettings(bit_depth=16)).image)
    # MR_small: 16 bits stored, signed: the range -32768..32767 sums to -1
    assert np.array_equal(stored - OFFSET_16BIT, -1 - (plain.astype(int) - OFFSET_16BIT))


def test_sixteen_bit_values_outside_the_range_are_clipped_and_said(tmp_path):
    path = dicom_copy("CT_small.dcm", tmp_path / "big.dcm", RescaleSlope=100)
    read = read_dicom(path, DicomSettings(bit_depth=16))
    assert read.clipped and np.asarray(read.image).max() == 65535


def test_other_high_depth_images_are_scaled_by_their_range():
    pixels = np.array([[100, 300], [600, 900]], dtype=np.uint16)
    image = to_model_image(Image.fromarray(pixels))
    assert image.mode == "L" and np.asarray(image).tolist() == [[0, 64], [159, 255]]
    rgb = Image.new("RGB", (2, 2))
    assert to_model_image(rgb) is rgb


def test_unreadable_files_say_why(tmp_path):
    cases = {
        "MR_truncated.dcm": "corrupt, truncated or undecodable pixel data",
        "rtplan.dcm": "holds no image: RT Plan Storage",
        "test-SR.dcm": "holds no image: Comprehensive SR Storage",
        "waveform_ecg.dcm": "holds no image: 12-lead ECG Waveform Storage",
        "no_meta.dcm": "no DICOM file meta header",
    }
    for name, reason in cases.items():
        with pytest.raises(UnreadableDicom, match=re.escape(reason)):
            read_dicom(pydicom_file(name), EIGHT_BIT)
    mpeg = dicom_copy("MR_small_RLE.dcm", tmp_path / "video.dcm")
    ds = pydicom.dcmread(mpeg)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4: no plugin decodes it
    ds.save_as(mpeg)
    with pytest.raises(UnreadableDicom, match="cannot decode transfer syntax: MPEG-4 AVC"):
        read_dicom(mpeg, EIGHT_BIT)


def test_a_stream_no_installed_plugin_decodes_is_named_by_its_transfer_syntax():
    path = pydicom_file("JPEG-lossy.dcm")  # 12-bit JPEG that pylibjpeg and Pillow both refuse
    try:
        decodable = pixel_array(path) is not None
    except Exception:
        decodable = False
    if decodable:  # a newer plugin reads it: then so must medft
        assert_close_to(read_dicom(path, EIGHT_BIT).image, expected_grey(path))
    else:
        with pytest.raises(UnreadableDicom, match=re.escape("JPEG Extended (Process 2 and 4)")):
            read_dicom(path, EIGHT_BIT)


def test_force_reads_a_file_without_meta_header(tmp_path):
    bare = without_meta("MR_small.dcm", tmp_path / "bare")
    assert not is_dicom_file(bare)  # no extension, no preamble: only --force looks at it
    with pytest.raises(UnreadableDicom, match="--force"):
        read_dicom(bare, EIGHT_BIT)
    forced = read_pixels(bare, DicomSettings(force=True))
    assert np.array_equal(forced, read_pixels(pydicom_file("MR_small.dcm")))


def test_dicom_files_are_known_by_extension_or_preamble(tmp_path):
    no_extension = dicom_copy("CT_small.dcm", tmp_path / "IM0001")
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    assert is_dicom_file(no_extension) and is_dicom_file(pydicom_file("no_meta.dcm"))
    assert not is_dicom_file(text)


def test_settings_round_trip_through_the_model_folder(tmp_path):
    settings = DicomSettings(window=parse_window("-600,1500"), bit_depth=16, frames="middle")
    save_settings(tmp_path, settings)
    assert load_settings(tmp_path) == settings
    assert load_settings(tmp_path / "elsewhere") is None
    (tmp_path / "dicom.json").write_text('{"bit_depth": 12}')
    with pytest.raises(MedftError, match="dicom.json"):
        load_settings(tmp_path)
    with pytest.raises(MedftError, match="--bit-depth"):
        DicomSettings(bit_depth=12)
    with pytest.raises(MedftError, match="--frames"):
        DicomSettings(frames="last")


def never_decode(*args, **kwargs):
    raise AssertionError("the pixel data was decoded")


def test_a_frame_over_the_pixel_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFT_MAX_MEGAPIXELS", raising=False)
    bomb = rle_dicom(tmp_path / "bomb.dcm", 10_000, 10_000)  # 1.6 MB declaring 100 megapixels
    monkeypatch.setattr(medft.formats.dicom_reading, "pixel_array", never_decode)
    expected = "10000 x 10000 pixels (100.0 megapixels) is over medft's budget of 50 megapixels"
    with pytest.raises(ImageTooLarge, match=re.escape(expected)):
        read_dicom(bomb, EIGHT_BIT)


def test_the_budget_counts_one_frame_and_moves_with_the_variable(tmp_path, monkeypatch):
    scan = rle_dicom(tmp_path / "scan.dcm", 1000, 1200, value=100)  # 1.2 megapixels
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "1")
    with pytest.raises(ImageTooLarge, match="budget of 1 megapixels"):
        read_dicom(scan, EIGHT_BIT)
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "1.5")
    pixels = read_pixels(scan)
    assert pixels.shape == (1000, 1200) and not pixels.any()  # one value: black, by min-max
    frames = pydicom_file("examples_ybr_color.dcm")  # 30 frames of 320 x 240: 2.3 megapixels
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "0.1")
    assert read_pixels(frames).shape == (240, 320, 3)


@pytest.mark.parametrize(
    "tags,reason",
    [
        ({"Columns": None}, "no usable image size: Columns is missing (1 to 65535)"),
        ({"Rows": 0}, "no usable image size: Rows is '0' (1 to 65535)"),
        ({"SamplesPerPixel": 2}, "unsupported Samples per Pixel: 2 (1 or 3)"),
    ],
)
def test_a_missing_or_impossible_image_size_says_so(tmp_path, monkeypatch, tags, reason):
    path = dicom_copy("MR_small_RLE.dcm", tmp_path / "odd.dcm", **tags)
    monkeypatch.setattr(medft.formats.dicom_reading, "pixel_array", never_decode)
    with pytest.raises(UnreadableDicom, match=re.escape(reason)):
        read_dicom(path, EIGHT_BIT)
