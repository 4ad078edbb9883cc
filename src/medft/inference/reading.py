"""Reading images as `pipeline()` does: an image or DICOM file (or a prepared dataset's row)
decoded, windowed as the model's training data was, and made the model's pixels by its own
image processor (`ImageReader`, in a `DataLoader`'s worker processes). An image that cannot
be read is an item with the reason, not an error."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image
from transformers.image_utils import load_image as rgb_image

from medft.data.transforms import use_one_thread_in_workers
from medft.formats.dicom_reading import is_dicom_file, read_dicom
from medft.formats.dicom_settings import DicomSettings, load_settings
from medft.formats.image_files import IMAGE_EXTENSIONS
from medft.formats.pixel_budget import opened_image
from medft.formats.windowing import to_model_image
from medft.inference.classifier import Classifier
from medft.inference.onnx_model import OnnxClassifier


def short_reason(error: Exception) -> str:
    text = " ".join(str(error).split()) or "no details"
    return f"{type(error).__name__}: {text[:200]}"


def read_input(
    path: str | Path, dicom: DicomSettings | None = None, frame: int | None = None
) -> Image.Image:
    """An image or DICOM file as the RGB image the model's processor takes: DICOM read with
    ``dicom`` (default: the file's own window; ``frame`` of a multi-frame file), a 16-bit
    image windowed as in training. Raises `ImageTooLarge` for an image over the pixel budget."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS and is_dicom_file(path):
        image = read_dicom(path, dicom or DicomSettings(), frame).image
        return rgb_image(to_model_image(image, dicom))
    with opened_image(path) as image:
        return rgb_image(to_model_image(image, dicom))


def load_image(
    path: str | Path, model: str | Path | None = None, frame: int | None = None
) -> Image.Image:
    """The PIL image of ``path`` (an image or a DICOM file; ``frame`` of a multi-frame one)
    that `pipeline()` takes, read as medft reads it for ``model`` (a model folder: the DICOM
    settings in its dicom.json; without one, a DICOM file's own window).

    For users of plain transformers:
    ``pipeline("image-classification", model=folder)(medft.load_image("scan.dcm", folder))``.
    """
    return read_input(path, load_settings(model) if model is not None else None, frame)


class ImageReader(torch.utils.data.Dataset):
    """Item i: (i, pixel values from the model's processor, None) or (i, None, why not).

    Items are files (and frames of multi-frame DICOM files: ``frames``, one per file, None
    for the one ``dicom`` picks), or rows of dataset splits (whose image bytes are decoded
    here, like files, so a damaged one is reported rather than raised).
    """

    def __init__(
        self,
        model: Classifier | OnnxClassifier,
        files: Sequence[Path] = (),
        splits: Sequence[Dataset] = (),
        frames: Sequence[int | None] = (),
    ) -> None:
        self.processor = model.processor
        self.column = model.task.image_column
        self.dicom = model.dicom
        undecoded = ImageFeature(decode=False)
        self.splits = [split.cast_column(self.column, undecoded) for split in splits]
        frames = list(frames) or [None] * len(files)
        self.items: list[tuple[int | None, Any]] = [(None, file) for file in zip(files, frames)]
        self.items += [(s, row) for s, split in enumerate(self.splits) for row in range(len(split))]

    def __len__(self) -> int:
        return len(self.items)

    def open(self, index: int) -> Image.Image:
        split, item = self.items[index]
        if split is None:
            path, frame = item
            if not Path(path).is_file():
                raise FileNotFoundError("no such file")
            return read_input(path, self.dicom, frame)
        stored = self.splits[split][item][self.column]
        if stored["bytes"] is not None:
            with opened_image(io.BytesIO(stored["bytes"])) as image:
                return rgb_image(to_model_image(image, self.dicom))
        return read_input(stored["path"], self.dicom)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """The model's input for one image, as its processor (and `pipeline()`) makes it."""
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        use_one_thread_in_workers()
        try:
            pixels = self.pixels(self.open(index))
        except Exception as error:  # any failure to decode or preprocess one file: report it
            return index, None, short_reason(error)
        return index, pixels, None


def collate_images(items: list[tuple[int, torch.Tensor | None, str | None]]):
    """Readable images stacked into one batch; the others as {index: reason}."""
    readable = [(index, pixels) for index, pixels, _ in items if pixels is not None]
    errors = {index: reason for index, _, reason in items if reason is not None}
    indices = [index for index, _ in readable]
    pixels = torch.stack([p for _, p in readable]) if readable else None
    return indices, pixels, errors
