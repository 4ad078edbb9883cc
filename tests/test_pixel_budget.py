"""medft.formats.pixel_budget: images whose headers declare more pixels than the budget are refused
before decoding; MEDFT_MAX_MEGAPIXELS moves the budget, for medft and Pillow alike."""

import pytest
from PIL import Image

from medft.cli import main
from medft.errors import MedftError
from medft.formats.pixel_budget import ImageTooLarge, check_pixels, max_megapixels, opened_image
from tests.oversized import constant_png


def test_the_budget_is_50_megapixels_unless_the_variable_says_otherwise(monkeypatch):
    monkeypatch.delenv("MEDFT_MAX_MEGAPIXELS", raising=False)
    assert max_megapixels() == 50
    check_pixels(10_000, 5_000)
    with pytest.raises(ImageTooLarge, match="10001 x 5000 pixels \\(50.0 megapixels\\) is over"):
        check_pixels(10_001, 5_000)
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "120.5")
    assert max_megapixels() == 120.5
    check_pixels(10_000, 12_000)
    for bad in ("lots", "0", "-5", "nan", "inf"):
        monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", bad)
        with pytest.raises(MedftError, match=f"MEDFT_MAX_MEGAPIXELS='{bad}' is not a positive"):
            max_megapixels()


def test_a_png_over_the_budget_is_refused_from_its_header(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFT_MAX_MEGAPIXELS", raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    bomb = constant_png(tmp_path / "bomb.png", 12_000, 12_000)  # 140 KB, 144 megapixels
    with pytest.raises(ImageTooLarge) as refused, opened_image(bomb) as image:
        image.load()
    assert str(refused.value) == (
        "image too large to decode safely: 144000000 pixels (144.0 megapixels) is over medft's "
        "budget of 50 megapixels; set MEDFT_MAX_MEGAPIXELS to raise it for real large scans"
    )
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "100")  # over the budget, under twice it:
    with pytest.raises(ImageTooLarge, match="budget of 100 megapixels"), opened_image(bomb):
        pass  # Pillow only warns, and medft refuses all the same
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "150")
    with opened_image(bomb) as image:
        assert image.size == (12_000, 12_000)


def test_a_raised_budget_is_not_undercut_by_pillows_own_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    huge = constant_png(tmp_path / "huge.png", 19_000, 10_000)  # over Pillow's default 179 MP
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "200")
    with opened_image(huge) as image:
        assert image.size == (19_000, 10_000)
    assert Image.MAX_IMAGE_PIXELS == 200_000_000  # and so for any image the process opens


def test_a_bad_variable_stops_a_command_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "50MP")
    assert main(["predict", "--model", str(tmp_path), str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "MEDFT_MAX_MEGAPIXELS='50MP' is not a positive number" in error[0]
