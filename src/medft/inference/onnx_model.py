"""A `medft export`ed model.onnx as the inference engine scores it: onnxruntime runs the
graph, and preprocessor.json (written beside it) gives the preprocessing, the labels, the
thresholds and the conformal prediction sets. `medft.inference.classifier.load_classifier`
returns one for a path ending in .onnx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medft.errors import MedftError, first_line
from medft.evaluation.conformal import ConformalSets
from medft.evaluation.thresholds import Thresholds, thresholds_from_json
from medft.formats.dicom_settings import DicomSettings
from medft.inference.preprocessing import PREPROCESSOR_NAME, SettingsProcessor
from medft.inference.tta import ORIGINAL, View
from medft.tasks import TaskInfo


@dataclass
class OnnxClassifier:
    """A `medft export`ed model.onnx, run by onnxruntime, with its preprocessor.json's
    preprocessing, labels and thresholds: scores images as a `Classifier` does."""

    session: Any  # onnxruntime.InferenceSession
    processor: SettingsProcessor
    task: TaskInfo
    path: Path
    thresholds: Thresholds | None
    dicom: DicomSettings | None  # how DICOM inputs are read (the model folder's dicom.json)
    conformal: ConformalSets | None = None  # the model folder's conformal prediction sets
    device = torch.device("cpu")  # where batches are assembled; onnxruntime takes NumPy

    @property
    def runs_on(self) -> str:
        return f"onnxruntime {self.session.get_providers()[0]}"

    @property
    def folder(self) -> Path:  # named as a Classifier's, for messages about ensembles
        return self.path

    def logits(self, pixels: torch.Tensor, view: View = ORIGINAL) -> np.ndarray:
        return self.session.run(["logits"], {"pixel_values": view.apply(pixels).numpy()})[0]

    def saved_thresholds(self) -> Thresholds | None:
        return self.thresholds

    def saved_conformal(self) -> ConformalSets | None:
        return self.conformal


def onnx_session(path: Path) -> Any:
    """An onnxruntime session on ``path``: the GPU where onnxruntime-gpu has one, else the CPU."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise MedftError("ONNX models run with onnxruntime: pip install 'medft[export]'.") from None
    offered = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in offered]
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as error:  # onnxruntime raises its own (Fail, InvalidGraph, NoSuchFile...)
        raise MedftError(f"onnxruntime cannot load {path}: {first_line(error)}") from None


def load_onnx_classifier(path: Path) -> OnnxClassifier:
    """``path`` (a model.onnx) and the preprocessor.json that `medft export` wrote beside it."""
    settings_path = path.parent / PREPROCESSOR_NAME
    if not path.is_file():
        raise MedftError(f"--model {path} does not exist; check the path.")
    if not settings_path.is_file():
        raise MedftError(
            f"{path} has no {PREPROCESSOR_NAME} beside it; export the model with "
            "`medft export`, which writes both."
        )
    try:
        settings = json.loads(settings_path.read_text())
        if settings["model_file"] != path.name:
            raise MedftError(
                f"{settings_path} describes {settings['model_file']}, not {path.name}; keep "
                "each export in a folder of its own."
            )
        task = TaskInfo.from_name(settings["task"], settings["labels"])
        processor = SettingsProcessor(settings)
        dicom = DicomSettings.from_dict(settings["dicom"]) if settings.get("dicom") else None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MedftError(
            f"{settings_path} is not a preprocessor.json written by medft export "
            f"({type(error).__name__}: {error}); export the model again."
        ) from None
    stored = settings.get("thresholds")
    thresholds = thresholds_from_json(stored, settings_path, task) if stored else None
    sets = settings.get("conformal")
    conformal = ConformalSets.from_json(sets, settings_path, task) if sets else None
    return OnnxClassifier(onnx_session(path), processor, task, path, thresholds, dicom, conformal)
