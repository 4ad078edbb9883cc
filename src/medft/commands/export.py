"""`medft export`: a saved model as ONNX, its preprocessing beside it, checked against PyTorch.

torch.onnx's dynamo exporter (`torch.export`) writes the graph, with a dynamic batch
axis; where it cannot capture a model, the TorchScript exporter does, and the summary
and preprocessor.json say which one ran and why. preprocessor.json holds what anyone
needs to run the model without medft or Python: the preprocessing steps
(`medft.inference.preprocessing`, checked against the model's own processor), the labels,
the activation that turns logits into probabilities, the stored thresholds and conformal
prediction sets.

Parity: onnxruntime's probabilities are compared with PyTorch's on the same pixels
(a dataset split's first images, or generated scans in the reference layouts); an
fp32 export that differs by more than 1e-4 is removed, not shipped. ``--quantize
dynamic`` writes onnxruntime's dynamic int8 quantization instead (weights in int8,
activations quantized on the fly); with ``--dataset``, the split's headline metrics
for PyTorch and for the exported model show what quantization cost.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from datasets import Dataset
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

from medft.config.inference import ExportArguments
from medft.errors import MedftError, first_line
from medft.evaluation.saved_models import split_scores
from medft.evaluation.thresholds import Thresholds, cutoffs
from medft.inference.classifier import Classifier, LogitsOnly, load_classifier, stored_thresholds
from medft.inference.inputs import labelled_dataset
from medft.inference.onnx_model import OnnxClassifier, onnx_session
from medft.inference.preprocessing import (
    PREPROCESSOR_NAME,
    SettingsProcessor,
    check_settings,
    input_size,
)
from medft.modeling.families import family_of
from medft.prepare.brain_tumor import CLASSES
from medft.prepare.synthetic import brain_scan, chest_radiograph
from medft.version import __version__

logger = logging.getLogger("medft")
PARITY_TOLERANCE = 1e-4  # fp32: onnxruntime against PyTorch, largest probability difference
PARITY_IMAGES = 16
MAX_SINGLE_FILE = 1.5e9  # bytes of weights beyond which they go to model.onnx.data (2 GB limit)


@dataclass
class ExportSummary:
    """What `medft export` wrote and how closely the export matches PyTorch."""

    output: Path
    settings: Path
    exporter: str
    fallback_reason: str | None  # why the dynamo exporter did not do it
    opset: int
    quantized: bool
    parity_inputs: str
    parity: float  # largest probability difference, onnxruntime vs PyTorch
    pixel_difference: float  # preprocessor.json's pixels vs the processor's
    metrics: list[tuple[str, float, float]] | None = None  # (metric, PyTorch, exported)
    metrics_split: str | None = None


# inputs ---------------------------------------------------------------------------------------


def generated_scans() -> list[Image.Image]:
    """Brain MRI slices and chest radiographs as the synthetic layouts make them, at 256 px."""
    count = PARITY_IMAGES // 2
    brains = [brain_scan(seed, CLASSES[seed * 5], 256) for seed in range(count)]
    chests = [
        Image.fromarray(chest_radiograph(seed, (seed % 14,), 256, 8.0)) for seed in range(count)
    ]
    return [image.convert("RGB") for image in brains + chests]


def parity_pixels(
    classifier: Classifier, data: Dataset | None, name: str
) -> tuple[torch.Tensor, str]:
    """The model's inputs to compare on: a split's first images, else generated scans."""
    if data is None:
        images = generated_scans()
        where = f"{len(images)} generated brain MRI and chest X-ray images"
    else:
        rows = data.select(range(min(PARITY_IMAGES, len(data))))
        images = [image.convert("RGB") for image in rows[classifier.task.image_column]]
        where = f"the first {len(images)} images of {name}"
    pixels = classifier.processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, where


# export ---------------------------------------------------------------------------------------


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> tuple[str, str | None]:
    """``model`` (pixels -> logits) as ONNX at ``path``, batch axis dynamic: the dynamo
    exporter, else the TorchScript one. Which ran, and why the first did not."""
    wrapped = LogitsOnly(model).eval()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    names = {"input_names": ["pixel_values"], "output_names": ["logits"]}
    try:
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=weights > MAX_SINGLE_FILE,
            **names,
        )
        return "torch.onnx dynamo (torch.export)", None
    except ModuleNotFoundError as error:  # onnxscript translates the dynamo graph
        raise MedftError(f"medft export needs {error.name}: pip install 'medft[export]'.") from None
    except Exception as error:  # torch.export has many ways to refuse a graph: fall back
        reason = f"{type(error).__name__}: {first_line(error, 200)}"
    logger.warning("the dynamo exporter failed (%s); exporting with TorchScript instead", reason)
    axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(wrapped, (example,), str(path), dynamo=False, dynamic_axes=axes, **names)
    return "torch.onnx TorchScript (fallback)", reason


def largest_difference(classifier: Classifier, path: Path, pixels: torch.Tensor) -> float:
    """The largest probability difference between PyTorch and onnxruntime on ``pixels``."""
    task = classifier.task
    ours = task.probabilities(classifier.logits(pixels))
    theirs = task.probabilities(
        onnx_session(path).run(["logits"], {"pixel_values": pixels.numpy()})[0]
    )
    return float(np.abs(ours - theirs).max())


def quantize(source: Path, output: Path) -> None:
    """onnxruntime's dynamic int8 quantization, after its recommended pre-processing."""
    prepared = source.with_name("prepared.onnx")
    quant_pre_process(str(source), str(prepared))
    quantize_dynamic(str(prepared), str(output), weight_type=QuantType.QInt8)


def opset_of(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def preprocessor_json(
    settings: dict[str, Any],
    classifier: Classifier,
    thresholds: Thresholds | None,
    output: Path,
    exported: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to run ``output`` without medft: inputs, outputs, labels, thresholds,
    conformal prediction sets (the model folder's conformal.json), how DICOM files are read."""
    task = classifier.task
    height, width = input_size(settings)
    conformal = classifier.saved_conformal()
    return {
        "model_file": output.name,
        "input": {
            "name": "pixel_values",
            "shape": ["batch", 3, height, width],
            "dtype": "float32",
            "layout": "NCHW",
            "channels": "RGB",
        },
        "output": {
            "name": "logits",
            "shape": ["batch", len(task.label_names)],
            "probabilities": task.activation,
        },
        "size": [height, width],
        **settings,
        "task": task.task,
        "labels": task.label_names,
        "thresholds": thresholds.to_json() if thresholds else None,
        "conformal": conformal.to_json(task) if conformal else None,
        "dicom": classifier.dicom.to_dict() if classifier.dicom else None,
        **exported,
        "medft_version": __version__,
    }


def check_destination(output: Path) -> Path:
    """Where preprocessor.json goes; refused if it describes another export there."""
    settings = output.parent / PREPROCESSOR_NAME
    if settings.is_file():
        try:
            described = json.loads(settings.read_text()).get("model_file")
        except (OSError, ValueError, AttributeError):
            described = None
        if described not in (None, output.name):
            raise MedftError(
                f"{settings} describes {described}; export {output.name} into a folder of its "
                "own, or remove both files."
            )
    return settings


def compared_metrics(
    reference: Classifier,
    exported: OnnxClassifier,
    data: Dataset,
    batch_size: int,
    num_workers: int,
) -> list[tuple[str, float, float]]:
    """The split's headline metrics for PyTorch and for the exported model (same thresholds)."""
    task = reference.task
    cut = cutoffs(task, exported.thresholds)
    values = []
    for classifier in (reference, exported):
        scores, _ = split_scores([classifier], data, task, batch_size, num_workers)
        values.append(task.headline_metrics(scores.probs, scores.labels, cut))
    return [(name, values[0][name], values[1][name]) for name in task.headline]


def export_onnx(options: ExportArguments) -> ExportSummary:
    """``model`` (a medft train output_dir) as ONNX at ``output``, preprocessor.json beside it;
    ``quantize`` "dynamic" writes the int8 model instead."""
    model, dataset, split = options.model, options.dataset, options.split
    quantize_mode, output = options.quantize, Path(options.output)
    settings_path = check_destination(output)
    classifier = load_classifier(model, device="cpu")
    if not isinstance(classifier, Classifier):
        raise MedftError(f"--model {model} is already an ONNX model; give the model folder.")
    settings = family_of(classifier.processor).preprocessing_settings(classifier.processor)
    pixel_difference = check_settings(settings, classifier.processor)
    data = None if dataset is None else labelled_dataset(dataset, model, split)[0][split]
    pixels, inputs = parity_pixels(classifier, data, f"{dataset}:{split}")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medft-export-") as work:
        fp32 = Path(work) / "fp32.onnx" if quantize_mode else output
        exporter, reason = write_onnx(classifier.model, pixels[:2], fp32)
        parity = largest_difference(classifier, fp32, pixels)
        if parity > PARITY_TOLERANCE:
            fp32.unlink()
            raise MedftError(
                f"the ONNX export's probabilities differ from PyTorch's by {parity:.2g} "
                f"(> {PARITY_TOLERANCE}) on {inputs}, so it was not written; please report it "
                "with the model's architecture."
            )
        if quantize_mode:
            quantize(fp32, output)
            parity = largest_difference(classifier, output, pixels)
    thresholds = stored_thresholds(classifier, None)
    exported = {
        "exporter": exporter,
        "opset": opset_of(output),
        "quantized": "dynamic int8 (onnxruntime)" if quantize_mode else None,
    }
    content = preprocessor_json(settings, classifier, thresholds, output, exported)
    settings_path.write_text(json.dumps(content, indent=2) + "\n")
    summary = ExportSummary(
        output,
        settings_path,
        exporter,
        reason,
        exported["opset"],
        bool(quantize_mode),
        inputs,
        parity,
        pixel_difference,
    )
    if data is not None:
        onnx = OnnxClassifier(
            onnx_session(output),
            SettingsProcessor(content),
            classifier.task,
            output,
            thresholds,
            classifier.dicom,
            classifier.saved_conformal(),
        )
        summary.metrics = compared_metrics(
            classifier, onnx, data, options.batch_size, options.num_workers
        )
        summary.metrics_split = f"{dataset}:{split}"
    return summary


def format_export_summary(summary: ExportSummary) -> str:
    kind = "int8 (dynamic quantization)" if summary.quantized else "fp32"
    size = summary.output.stat().st_size / 2**20
    lines = [
        f"Exported {summary.output} ({kind}, {size:.2f} MiB, opset {summary.opset}) with "
        f"{summary.exporter}, batch axis dynamic.",
        *(
            [f"  the dynamo exporter failed: {summary.fallback_reason}"]
            if summary.fallback_reason
            else []
        ),
        f"Parity on {summary.parity_inputs}: largest probability difference from PyTorch "
        f"{summary.parity:.2g}" + ("" if summary.quantized else f" (bar: {PARITY_TOLERANCE})"),
        f"Preprocessing: {summary.settings} (reproduces the model's processor to "
        f"{summary.pixel_difference:.1g} per pixel)",
    ]
    if summary.metrics:
        lines += [f"\n  {summary.metrics_split:<30} PyTorch   ONNX {kind.split()[0]}   change"]
        lines += [
            f"  {name:<30} {ours:7.4f}   {theirs:9.4f}   {theirs - ours:+.4f}"
            for name, ours, theirs in summary.metrics
        ]
    lines.append(f"Run it: medft predict --model {summary.output} IMAGES...")
    return "\n".join(lines)
