"""Loading a saved model to score images with: a PyTorch model folder (`Classifier`) or a
`medft export`ed model.onnx (`medft.inference.onnx_model`), alone or as an ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PreTrainedModel,
)

from medft.errors import MedftError, first_line
from medft.evaluation.conformal import ConformalSets, load_conformal
from medft.evaluation.thresholds import THRESHOLDS_NAME, Thresholds, load_thresholds
from medft.formats.dicom_settings import DicomSettings, load_settings
from medft.inference.onnx_model import OnnxClassifier, load_onnx_classifier
from medft.inference.tta import ORIGINAL, View
from medft.modeling.weights import check_saved_weights
from medft.tasks import TaskInfo

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

    def saved_conformal(self) -> ConformalSets | None:
        """The conformal prediction sets saved beside the model (conformal.json), if any."""
        return load_conformal(self.folder, self.task)


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
    return TaskInfo.from_model_config(config)


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


def load_members(
    folders: Sequence[str | Path], device: str | None = None, precision: str = "fp32"
) -> list[Classifier | OnnxClassifier]:
    """The saved models of an ensemble (one is an ensemble of one); they must predict the same
    labels the same way."""
    members = [load_classifier(folder, device, precision) for folder in folders]
    first = members[0]
    for member in members[1:]:
        if not member.task.same_labels(first.task):
            raise MedftError(
                f"the models of an ensemble must predict the same labels: {member.folder} has "
                f"{', '.join(member.task.label_names)}, {first.folder} "
                f"{', '.join(first.task.label_names)}."
            )
    return members
