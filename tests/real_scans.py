"""Real scans that pydicom's wheel ships, as 8-bit images, and the near copies a scraped
dataset holds of them."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from medft.formats.dicom_reading import read_dicom
from medft.formats.dicom_settings import DicomSettings
from tests.dicom_files import pydicom_file

# distinct scans, by what they show (pHash distances between any two are above 16 bits)
SCANS = {
    "ct": (
        "CT_small.dcm",
        "693_J2KI.dcm",
        "J2K_pixelrep_mismatch.dcm",
        "image_dfl.dcm",
        "liver_1frame.dcm",
    ),
    "mr": ("MR_small.dcm", "examples_overlay.dcm", "JPEG2000.dcm"),
}


def real_scan(name: str) -> Image.Image:
    return read_dicom(pydicom_file(name), DicomSettings()).image


def near_copies(image: Image.Image) -> dict[str, Image.Image]:
    """Another size, another JPEG quality with a few pixels cropped (3 of a 630-pixel side, as
    many in proportion), and the other colour mode (a greyscale scan saved as RGB, a colour
    image as greyscale)."""
    width, height = image.size
    crop = max(1, round(min(width, height) * 3 / 630))
    encoded = io.BytesIO()
    image.convert("RGB").crop((crop, crop, width - crop, height - crop)).save(
        encoded, "JPEG", quality=70
    )
    return {
        "resized": image.resize((int(width * 0.8), int(height * 0.8))),
        "jpeg": Image.open(encoded),
        "other mode": image.convert("RGB" if image.mode == "L" else "L"),
    }


def write_folder_source(root: Path) -> dict[str, list[str]]:
    """Class folders of real scans and their near copies; each scan's file names by scan."""
    versions: dict[str, list[str]] = {}
    for label, names in SCANS.items():
        for name in names:
            stem = Path(name).stem
            original = real_scan(name)
            files = {f"{stem}.png": original}
            copies = near_copies(original).items()
            files |= {f"{stem}_{kind.replace(' ', '_')}.png": copy for kind, copy in copies}
            (root / label).mkdir(parents=True, exist_ok=True)
            for file, image in files.items():
                image.save(root / label / file)
            versions[stem] = [f"{label}/{file}" for file in files]
    return versions
