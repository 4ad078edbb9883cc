"""`medft export`: ONNX at parity with PyTorch for a timm CNN, a transformers ViT and a
merged-LoRA model; int8 quantization's metric change; `medft predict` on the ONNX file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from datasets import load_from_disk

from medft.cli import main
from medft.commands.export import PARITY_TOLERANCE, export_onnx, generated_scans
from medft.commands.predict import predict
from medft.config.inference import ExportArguments, PredictArguments
from medft.errors import MedftError
from medft.inference.classifier import load_classifier
from medft.modeling.lora import merged
from medft.prepare.chestxray14 import SUBGROUP_COLUMNS
from medft.tasks import TaskInfo
from tests.helpers import lora_vit_with_adapters

TEXT_COLUMNS = ("path", "error", "findings", "decision", *SUBGROUP_COLUMNS)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def onnx_probabilities(path: Path, task: TaskInfo, pixels: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return task.probabilities(session.run(["logits"], {"pixel_values": pixels.numpy()})[0])


def assert_parity(model: Path, exported: Path, pixels: torch.Tensor) -> None:
    """onnxruntime against PyTorch on the same pixels, in batches of 1, 3 and all."""
    classifier = load_classifier(model, device="cpu")
    expected = classifier.task.probabilities(classifier.logits(pixels))
    for size in (1, 3, len(pixels)):
        for start in range(0, len(pixels), size):
            batch = pixels[start : start + size]
            found = onnx_probabilities(exported, classifier.task, batch)
            assert np.abs(found - expected[start : start + size]).max() <= PARITY_TOLERANCE


def split_pixels(model: Path, dataset: Path, split: str = "test") -> torch.Tensor:
    classifier = load_classifier(model, device="cpu")
    images = [image.convert("RGB") for image in load_from_disk(str(dataset))[split]["image"]]
    return classifier.processor(images=images, return_tensors="pt")["pixel_values"]


def test_a_timm_cnn_exports_at_parity_and_predicts_the_same_csv(
    trained_multilabel, nih_prepared, tmp_path
):
    output = tmp_path / "onnx" / "model.onnx"
    summary = export_onnx(
        ExportArguments(
            model=trained_multilabel, output=output, dataset=str(nih_prepared), num_workers=0
        )
    )
    assert summary.exporter == "torch.onnx dynamo (torch.export)" and summary.parity <= 1e-4
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]
    assert_parity(trained_multilabel, output, split_pixels(trained_multilabel, nih_prepared))

    settings = json.loads((output.parent / "preprocessor.json").read_text())
    stored = json.loads((trained_multilabel / "thresholds.json").read_text())
    assert settings["thresholds"]["values"] == stored["values"]
    assert settings["labels"] == stored["labels"] and settings["task"] == "multilabel"
    assert settings["output"]["probabilities"] == "sigmoid" and settings["size"] == [32, 32]
    assert settings["resize"] == {"shortest_edge": 33}  # timm ResNet-18: 32 / crop_pct 0.95
    assert settings["crop"] == {"height": 32, "width": 32}
    assert [name for name, _, _ in summary.metrics] == [
        "mean_auroc",
        "micro_auroc",
        "macro_f1",
        "micro_f1",
    ]
    for _, ours, theirs in summary.metrics:
        assert theirs == pytest.approx(ours, abs=1e-3)

    rows = {}
    for name, model in (("torch", trained_multilabel), ("onnx", output)):
        predict(
            PredictArguments(
                model=[model],
                inputs=[nih_prepared],
                output=tmp_path / f"{name}.csv",
                num_workers=1,
                ood=False,  # an ONNX model has no features to flag images by
                progress=False,
            )
        )
        rows[name] = read_rows(tmp_path / f"{name}.csv")
    assert [row["path"] for row in rows["onnx"]] == [row["path"] for row in rows["torch"]]
    for ours, theirs in zip(rows["torch"], rows["onnx"]):
        assert {c: theirs[c] for c in TEXT_COLUMNS if c in ours} == {
            c: ours[c] for c in TEXT_COLUMNS if c in ours
        }  # the findings, and the dataset's subgroup columns carried through
        for column in set(ours) - set(TEXT_COLUMNS):
            assert float(theirs[column]) == pytest.approx(float(ours[column]), abs=1e-4)


def test_a_transformers_vit_exports_from_the_command_line(
    trained_binary, brain_binary, brain_raw, tmp_path, capsys
):
    output = tmp_path / "vit.onnx"
    code = main(["export", "--model", str(trained_binary), "--output", str(output),
                 "--dataset", str(brain_binary), "--split", "validation"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "with torch.onnx dynamo (torch.export), batch axis dynamic" in printed
    assert "first 16 images of" in printed and "auroc" in printed
    assert_parity(trained_binary, output, split_pixels(trained_binary, brain_binary, "validation"))

    folder = brain_raw / "Glioblastoma T2"  # files, with three broken ones, as predict takes them
    predict(
        PredictArguments(
            model=[output],
            inputs=[folder],
            output=tmp_path / "onnx.csv",
            num_workers=0,
            progress=False,
        )
    )
    predict(
        PredictArguments(
            model=[trained_binary],
            inputs=[folder],
            output=tmp_path / "torch.csv",
            num_workers=0,
            progress=False,
        )
    )
    for ours, theirs in zip(read_rows(tmp_path / "torch.csv"), read_rows(tmp_path / "onnx.csv")):
        assert (theirs["path"], theirs["error"], theirs["label_1"], theirs["decision"]) == (
            ours["path"],
            ours["error"],
            ours["label_1"],
            ours["decision"],
        )
        if not ours["error"]:
            assert float(theirs["score_1"]) == pytest.approx(float(ours["score_1"]), abs=1e-4)


def test_a_merged_lora_model_exports_at_parity(tmp_path):
    built = lora_vit_with_adapters()
    model = tmp_path / "lora"
    merged(built.model).save_pretrained(model)  # as medft train saves a LoRA run
    built.processor.save_pretrained(model)
    output = tmp_path / "export" / "model.onnx"
    summary = export_onnx(ExportArguments(model=model, output=output))
    assert summary.parity <= PARITY_TOLERANCE and "generated" in summary.parity_inputs
    pixels = built.processor(images=generated_scans(), return_tensors="pt")["pixel_values"]
    assert_parity(model, output, pixels)
    settings = json.loads((output.parent / "preprocessor.json").read_text())
    assert settings["thresholds"] is None and settings["output"]["probabilities"] == "softmax"


def test_dynamic_quantization_reports_what_it_costs(trained_multilabel, nih_prepared, tmp_path):
    fp32, int8 = tmp_path / "fp32" / "model.onnx", tmp_path / "int8" / "model.onnx"
    export_onnx(ExportArguments(model=trained_multilabel, output=fp32))
    summary = export_onnx(
        ExportArguments(
            model=trained_multilabel,
            output=int8,
            quantize="dynamic",
            dataset=str(nih_prepared),
            num_workers=0,
        )
    )
    assert int8.stat().st_size < fp32.stat().st_size / 3  # int8 weights
    settings = json.loads((int8.parent / "preprocessor.json").read_text())
    assert settings["quantized"] == "dynamic int8 (onnxruntime)"

    # the exported column is what the int8 model's own predictions give
    predict(
        PredictArguments(
            model=[int8],
            inputs=[nih_prepared],
            output=tmp_path / "int8.csv",
            num_workers=0,
            progress=False,
        )
    )
    rows = read_rows(tmp_path / "int8.csv")
    task = load_classifier(int8).task
    probs = np.array([[float(row[name]) for name in task.label_names] for row in rows])
    labels = task.encode(load_from_disk(str(nih_prepared))["test"]["labels"])
    cut = np.array([settings["thresholds"]["values"][name] for name in task.label_names])
    reported = {name: theirs for name, _, theirs in summary.metrics}
    recomputed = task.headline_metrics(probs, labels, cut)
    assert reported == pytest.approx({name: recomputed[name] for name in reported}, abs=1e-4)


def test_the_torchscript_exporter_takes_over_when_dynamo_fails(
    trained_binary, tmp_path, monkeypatch
):
    export = torch.onnx.export

    def dynamo_refuses(*args, **settings):
        if settings.get("dynamo"):
            raise RuntimeError("torch.export cannot trace this model")
        return export(*args, **settings)

    monkeypatch.setattr(torch.onnx, "export", dynamo_refuses)
    output = tmp_path / "model.onnx"
    summary = export_onnx(ExportArguments(model=trained_binary, output=output))
    assert summary.exporter == "torch.onnx TorchScript (fallback)"
    assert summary.fallback_reason == "RuntimeError: torch.export cannot trace this model"
    assert json.loads((tmp_path / "preprocessor.json").read_text())["exporter"] == summary.exporter
    classifier = load_classifier(trained_binary)
    pixels = classifier.processor(images=generated_scans(), return_tensors="pt")["pixel_values"]
    assert_parity(trained_binary, output, pixels)


def test_mistakes_are_clear_errors(trained_binary, tmp_path):
    with pytest.raises(MedftError, match="must end in .onnx"):
        export_onnx(ExportArguments(model=trained_binary, output=tmp_path / "model.pt"))
    (tmp_path / "preprocessor.json").write_text(json.dumps({"model_file": "other.onnx"}))
    with pytest.raises(MedftError, match="describes other.onnx; export model.onnx into a folder"):
        export_onnx(ExportArguments(model=trained_binary, output=tmp_path / "model.onnx"))
    with pytest.raises(MedftError, match="describes other.onnx, not model.onnx"):
        (tmp_path / "model.onnx").write_bytes(b"")
        predict(
            PredictArguments(
                model=[tmp_path / "model.onnx"], inputs=[tmp_path], output=tmp_path / "p.csv"
            )
        )
    with pytest.raises(MedftError, match="has no preprocessor.json beside it"):
        (tmp_path / "alone").mkdir()
        (tmp_path / "alone" / "model.onnx").write_bytes(b"")
        predict(
            PredictArguments(
                model=[tmp_path / "alone" / "model.onnx"],
                inputs=[tmp_path],
                output=tmp_path / "p.csv",
            )
        )
    with pytest.raises(MedftError, match="--precision bf16 is for PyTorch models"):
        predict(
            PredictArguments(
                model=[tmp_path / "model.onnx"],
                inputs=[tmp_path],
                output=tmp_path / "p.csv",
                precision="bf16",
            )
        )
