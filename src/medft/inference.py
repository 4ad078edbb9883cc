"""One inference engine: load a saved model, read images as `pipeline()` does, score batches.

`medft evaluate`, `medft predict`, `medft explain`, `medft serve` and `medft export` all go
through here. A saved model runs in PyTorch; a `medft export`ed model.onnx runs in
onnxruntime, with the preprocessing its preprocessor.json describes. Worker
processes (a torch `DataLoader`) decode each image as `pipeline()` does
(transformers' `load_image`: EXIF orientation applied, RGB) and preprocess it with
the model's own image processor; the model scores whole batches, on the GPU when
there is one. DICOM files are read by `medft.dicom` with the settings the model
folder records (``dicom.json``: window, bit depth, frames), as its training data
was; `load_image` gives plain-transformers users the same image. An image that
cannot be read is reported with the reason, and the run goes on.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PreTrainedModel,
)
from transformers.image_utils import load_image as rgb_image

from medft.config.commands import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
from medft.data.loading import check_split, read_dataset
from medft.data.transforms import use_one_thread_in_workers
from medft.dicom import (
    UnreadableDicom,
    is_dicom_file,
    number_of_frames,
    open_dicom,
    read_dicom,
    to_model_image,
)
from medft.dicom_settings import DicomSettings, load_settings
from medft.errors import MedftError, first_line
from medft.modeling.weights import check_saved_weights
from medft.onnx_model import OnnxClassifier, load_onnx_classifier
from medft.pixel_budget import opened_image
from medft.prepare.files import IMAGE_EXTENSIONS, is_image_file, is_visible_file, scan_images
from medft.tasks import LABEL_COLUMNS, TaskInfo
from medft.thresholds import THRESHOLDS_NAME, Thresholds, load_thresholds
from medft.tta import ORIGINAL, View

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class LogitsOnly(nn.Module):
    """A transformers model as plain torch code calls it (pytorch-grad-cam, torch.onnx):
    pixels in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


@dataclass
class Classifier:
    """A saved model ready to score images: weights on the device, processor, labels."""

    model: PreTrainedModel
    processor: Any
    task: TaskInfo
    device: torch.device
    folder: Path
    autocast: torch.dtype | None = None  # bf16 / fp16 inference; None keeps fp32
    dicom: DicomSettings | None = None  # how its training data's DICOM files were read

    @property
    def runs_on(self) -> str:
        return str(self.device)

    def logits(self, pixels: torch.Tensor, view: View = ORIGINAL) -> np.ndarray:
        """The logits of a batch of processed images seen through a test-time ``view`` (applied
        on the device), as float32 on the CPU."""
        pixels = pixels.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, self.autocast, enabled=self.autocast is not None),
        ):
            return self.model(pixel_values=view.apply(pixels)).logits.float().cpu().numpy()

    def saved_thresholds(self) -> Thresholds | None:
        """The thresholds.json that `medft evaluate` left beside the model, if any."""
        path = self.folder / THRESHOLDS_NAME
        return load_thresholds(path, self.task) if path.is_file() else None


def saved_task(folder: str | Path) -> TaskInfo:
    """The labels and task of the model saved in ``folder``, read from its config.json."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        adapter = (folder / "adapter_config.json").is_file()
        hint = (
            " (it holds a LoRA adapter only: retrain without save_adapter_only)" if adapter else ""
        )
        raise MedftError(
            f"--model {folder} is not a saved model (no config.json){hint}; give the "
            "output_dir of `medft train` or a folder holding a model saved with save_pretrained."
        )
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise MedftError(f"cannot read the model config in {folder}: {first_line(error)}") from None
    multi_label = config.problem_type == "multi_label_classification"
    labels = [config.id2label[index] for index in range(config.num_labels)]
    return TaskInfo(labels, multi_label, label_column=LABEL_COLUMNS[multi_label])


def load_classifier(
    folder: str | Path, device: str | None = None, precision: str = "fp32"
) -> Classifier | OnnxClassifier:
    """The model and image processor in ``folder`` (the output_dir of `medft train`), or a
    ``model.onnx`` from `medft export` (run by onnxruntime, preprocessed by its
    preprocessor.json).

    Weights are laid out channels-last, which oneDNN and cuDNN run convolutions
    fastest in (1.26x for a ResNet-18 at 224 px on a 2-core Xeon) with the same fp32
    arithmetic. ``precision`` bf16 or fp16 computes in half precision (autocast):
    faster again where the hardware has it, at the cost of scores that differ
    from fp32's in the second or third digit.
    """
    if precision not in PRECISIONS:
        raise MedftError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'.")
    if Path(folder).suffix == ".onnx":
        if precision != "fp32":
            raise MedftError(
                f"--precision {precision} is for PyTorch models; an ONNX model runs "
                "at the precision it was exported (or quantized) in."
            )
        return load_onnx_classifier(Path(folder))
    task = saved_task(folder)
    check_saved_weights(folder)
    try:
        model = AutoModelForImageClassification.from_pretrained(folder)
        processor = AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise MedftError(f"cannot load the model in {folder}: {first_line(error)}") from None
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if precision == "fp16" and chosen.type == "cpu":
        raise MedftError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32.")
    model = model.to(chosen, memory_format=torch.channels_last).eval()
    return Classifier(
        model, processor, task, chosen, Path(folder), PRECISIONS[precision], load_settings(folder)
    )


def stored_thresholds(
    classifier: Classifier | OnnxClassifier, path: Path | None
) -> Thresholds | None:
    """The thresholds `medft evaluate` stored (``path``, else those saved with the model);
    None when there are none (multi-class models never need one)."""
    if not classifier.task.thresholded_labels:
        return None
    if path is None:
        return classifier.saved_thresholds()
    if not path.is_file():
        raise MedftError(f"--thresholds {path} does not exist; check the path.")
    return load_thresholds(path, classifier.task)


# reading images -------------------------------------------------------------------------------


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


def score_images(
    classifier: Classifier | OnnxClassifier,
    reader: ImageReader | Sequence[tuple[int, torch.Tensor | None, str | None]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = DEFAULT_WORKERS,
    progress: bool = True,
    views: Sequence[View] = (ORIGINAL,),
    logits: bool = False,
) -> tuple[np.ndarray, dict[int, str]]:
    """Probabilities per item (softmax or sigmoid, averaged over the test-time ``views``; NaN
    rows for unreadable items), or with ``logits`` the raw logits, and the reason each
    unreadable item failed. ``reader``'s items are (index, pixels, None) or (index, None,
    reason), as `ImageReader` reads them or a caller has made them."""
    scores = (lambda raw: raw) if logits else classifier.task.probabilities
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=classifier.device.type == "cuda",
    )
    probs = np.full((len(reader), len(classifier.task.label_names)), np.nan)
    errors: dict[int, str] = {}
    with tqdm(total=len(reader), desc="scoring", unit="img", disable=not progress) as bar:
        for indices, pixels, failed in loader:
            if pixels is not None:
                outputs = [classifier.logits(pixels, view) for view in views]
                probs[indices] = np.mean([scores(output) for output in outputs], axis=0)
            errors.update(failed)
            bar.update(len(indices) + len(failed))
    return probs, errors


def load_members(
    folders: Sequence[str | Path], device: str | None = None, precision: str = "fp32"
) -> list[Classifier | OnnxClassifier]:
    """The saved models of an ensemble (one is an ensemble of one); they must predict the same
    labels the same way."""
    members = [load_classifier(folder, device, precision) for folder in folders]
    first = members[0]
    for member in members[1:]:
        if (member.task.label_names, member.task.multi_label) != (
            first.task.label_names, first.task.multi_label
        ):  # fmt: skip
            raise MedftError(
                f"the models of an ensemble must predict the same labels: {member.folder} has "
                f"{', '.join(member.task.label_names)}, {first.folder} "
                f"{', '.join(first.task.label_names)}."
            )
    return members


def score_members(
    members: Sequence[Classifier | OnnxClassifier],
    files: Sequence[Path] = (),
    splits: Sequence[Dataset] = (),
    *,
    frames: Sequence[int | None] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = DEFAULT_WORKERS,
    progress: bool = True,
    views: Sequence[View] = (ORIGINAL,),
) -> tuple[np.ndarray, dict[int, str]]:
    """`score_images` with every member (each reading through its own processor and DICOM
    settings), the probabilities averaged; an item one member cannot read is unreadable."""
    probs, errors = [], {}
    for member in members:
        reader = ImageReader(member, files, splits, frames)
        member_probs, member_errors = score_images(
            member, reader, batch_size=batch_size, num_workers=num_workers, progress=progress,
            views=views,
        )  # fmt: skip
        probs.append(member_probs)
        errors |= member_errors
    return np.mean(probs, axis=0), errors


def score_split(
    members: Sequence[Classifier | OnnxClassifier],
    dataset: Dataset,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = DEFAULT_WORKERS,
    views: Sequence[View] = (ORIGINAL,),
) -> tuple[np.ndarray, dict[int, str]]:
    """`score_members` over one split of a prepared dataset (rows in order)."""
    return score_members(members, splits=[dataset], batch_size=batch_size,
                         num_workers=num_workers, views=views)  # fmt: skip


# what to score --------------------------------------------------------------------------------


def is_image_or_dicom(path: Path) -> bool:
    return is_image_file(path) or (is_visible_file(path) and is_dicom_file(path))


@dataclass
class Inputs:
    """Images given on the command line, as files and dataset splits, with a name per image."""

    files: list[Path] = field(default_factory=list)
    splits: list[Dataset] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)  # the prepared folder of each split
    names: list[str] = field(default_factory=list)  # files first, then dataset rows
    ignored: Counter[str] = field(default_factory=Counter)
    frames: list[int | None] = field(default_factory=list)  # per file: None, or a DICOM frame


def every_frame(files: list[Path], force: bool) -> tuple[list[Path], list[int | None]]:
    """Each multi-frame DICOM file once per frame (as a model trained with --frames all saw
    it); other files once. A file whose header cannot be read stays, to be reported."""
    expanded, frames = [], []
    for path in files:
        count = 1
        if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS and is_dicom_file(path):
            with contextlib.suppress(UnreadableDicom):
                count = number_of_frames(open_dicom(path, force, stop_before_pixels=True))
        expanded += [path] * count
        frames += list(range(count)) if count > 1 else [None]
    return expanded, frames


def collect_inputs(
    paths: Sequence[str | Path], split: str = "test", dicom: DicomSettings | None = None
) -> Inputs:
    """Image and DICOM files (every frame, for a model trained on every frame: ``dicom``);
    folders, searched recursively; prepared datasets (a folder holding dataset_dict.json), of
    which ``split`` is read. A missing file stays in, to be reported."""
    inputs = Inputs()
    dataset_rows: list[str] = []
    for given in map(Path, paths):
        if (given / "dataset_dict.json").is_file():
            dataset = read_dataset(str(given))
            check_split(dataset, split, str(given))
            part = dataset[split]
            inputs.splits.append(part)
            inputs.datasets.append(given)
            ids = list(part["image_id"]) if "image_id" in part.column_names else None
            dataset_rows += [
                f"{given}:{split}:{ids[row] if ids else row}" for row in range(len(part))
            ]
        elif given.is_dir():
            inputs.files += scan_images(given, inputs.ignored, accept=is_image_or_dicom)
        else:
            inputs.files.append(given)
    inputs.frames = [None] * len(inputs.files)
    if dicom is not None and dicom.frames == "all":
        inputs.files, inputs.frames = every_frame(inputs.files, dicom.force)
    inputs.names = [
        str(path) if frame is None else f"{path} (frame {frame})"
        for path, frame in zip(inputs.files, inputs.frames)
    ] + dataset_rows
    if not inputs.names:
        ignored = sum(inputs.ignored.values())
        raise MedftError(
            f"found no images in {', '.join(map(str, paths))}"
            + (f" ({ignored} other files ignored)" if ignored else "")
            + "; give image files, folders of them, or a prepared dataset."
        )
    return inputs
