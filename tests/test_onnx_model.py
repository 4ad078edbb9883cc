"""`medft.inference.onnx_model`: a model.onnx and the preprocessor.json beside it loaded as
the inference engine scores them, on a hand-built graph whose logits are known (exports of
trained models at parity with PyTorch, and the mistakes `medft predict` names: test_export)."""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from medft.errors import MedftError
from medft.formats.dicom_settings import DicomSettings, Window
from medft.inference.classifier import load_classifier
from medft.inference.onnx_model import OnnxClassifier, load_onnx_classifier, onnx_session
from medft.inference.reading import ImageReader
from medft.inference.scoring import score_images
from medft.inference.tta import HFLIP, ORIGINAL

SIDE = 4  # the graph's input: 3 x 4 x 4 pixels
WEIGHTS = np.random.default_rng(0).normal(size=(3 * SIDE * SIDE, 2)).astype(np.float32)
BIAS = np.array([0.25, -0.5], dtype=np.float32)
PREPROCESSING = {
    "resize": {"height": SIDE, "width": SIDE},
    "interpolation": "bilinear",
    "resize_on": "PIL image",
    "crop": None,
    "crop_offset": "floor",
    "rescale_factor": 1 / 255,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}


def expected_logits(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1) @ WEIGHTS + BIAS


def linear_graph(path: Path) -> Path:
    """logits = flatten(pixel_values) @ WEIGHTS + BIAS, batch axis dynamic."""
    pixels = helper.make_tensor_value_info(
        "pixel_values", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE]
    )
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["logits"]),
        ],
        "linear",
        [pixels],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(WEIGHTS, "weights"), numpy_helper.from_array(BIAS, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path.write_bytes(model.SerializeToString())
    return path


def export_folder(folder: Path, **changes) -> Path:
    """A model.onnx with the preprocessor.json `medft export` writes (its reading parts)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "model_file": "model.onnx",
        **PREPROCESSING,
        "task": "binary",
        "labels": ["normal", "tumor"],
        "thresholds": {"method": "youden", "tuned_on": "validation", "values": {"tumor": 0.3}},
        "dicom": None,
    } | changes
    (folder / "preprocessor.json").write_text(json.dumps(settings))
    return linear_graph(folder / "model.onnx")


def test_an_export_loads_with_its_labels_thresholds_and_dicom_settings(tmp_path):
    dicom = {"window": {"center": -600.0, "width": 1500.0}, "bit_depth": 16, "frames": "all"}
    path = export_folder(tmp_path, dicom=dicom | {"force": False})
    classifier = load_classifier(path)  # a path ending in .onnx: onnxruntime runs it
    assert isinstance(classifier, OnnxClassifier)
    assert (classifier.task.task, classifier.task.label_names) == ("binary", ["normal", "tumor"])
    assert classifier.saved_thresholds().values == {"tumor": 0.3}
    assert classifier.saved_thresholds().tuned_on == "validation"
    assert classifier.dicom == DicomSettings(Window(-600.0, 1500.0), 16, "all")
    assert classifier.runs_on == "onnxruntime CPUExecutionProvider"
    assert classifier.folder == path and classifier.device == torch.device("cpu")
    findings = {"task": "multilabel", "labels": ["Mass", "Nodule"], "thresholds": None}
    multilabel = load_onnx_classifier(export_folder(tmp_path / "findings", **findings))
    assert multilabel.task.multi_label and multilabel.saved_thresholds() is None


def test_logits_are_the_graphs_on_the_pixels_a_view_gives(tmp_path):
    classifier = load_onnx_classifier(export_folder(tmp_path))
    pixels = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 3, SIDE, SIDE)))
    pixels = pixels.float()
    assert classifier.logits(pixels) == pytest.approx(expected_logits(pixels.numpy()), abs=1e-5)
    flipped = expected_logits(pixels.flip(-1).numpy())
    assert classifier.logits(pixels, HFLIP) == pytest.approx(flipped, abs=1e-5)
    assert not np.allclose(flipped, classifier.logits(pixels, ORIGINAL))


def test_images_are_preprocessed_as_preprocessor_json_says_and_scored(tmp_path):
    classifier = load_onnx_classifier(export_folder(tmp_path / "model"))
    files = []
    for shade in (0, 51, 255):  # a constant image stays constant through the resize
        files.append(tmp_path / f"grey{shade}.png")
        Image.new("L", (10, 7), shade).save(files[-1])
    probs, errors = score_images(
        classifier, ImageReader(classifier, files), batch_size=2, num_workers=0, progress=False
    )
    assert errors == {}
    for shade, row in zip((0, 51, 255), probs):
        pixels = np.full((1, 3, SIDE, SIDE), (shade / 255 - 0.5) / 0.5, dtype=np.float32)
        logits = expected_logits(pixels)[0]
        assert row == pytest.approx(np.exp(logits) / np.exp(logits).sum(), abs=1e-5)


def test_a_missing_model_file_is_named(tmp_path):
    with pytest.raises(MedftError) as error:
        load_onnx_classifier(tmp_path / "model.onnx")
    assert str(error.value) == f"--model {tmp_path / 'model.onnx'} does not exist; check the path."


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "(JSONDecodeError: "),
        (json.dumps({"model_file": "model.onnx", **PREPROCESSING}), "(KeyError: 'task')"),
        (json.dumps(["model.onnx"]), "(TypeError: "),
        (
            json.dumps({"model_file": "model.onnx", "task": "binary", "labels": ["a", "b"]}),
            "(KeyError: 'mean')",
        ),
    ],
)
def test_a_preprocessor_json_medft_did_not_write_is_refused(tmp_path, content, reason):
    path = export_folder(tmp_path)
    (tmp_path / "preprocessor.json").write_text(content)
    with pytest.raises(MedftError) as error:
        load_onnx_classifier(path)
    message = str(error.value)
    assert message.startswith(
        f"{tmp_path / 'preprocessor.json'} is not a preprocessor.json written by medft export "
        + reason
    )
    assert message.endswith("); export the model again.")


def test_thresholds_for_other_labels_are_refused_naming_the_file(tmp_path):
    path = export_folder(tmp_path, thresholds={"values": {"lesion": 0.4}})
    with pytest.raises(MedftError) as error:
        load_onnx_classifier(path)
    assert str(error.value) == (
        f"{tmp_path / 'preprocessor.json'} holds thresholds for lesion, but the model predicts "
        "tumor; run `medft evaluate` on this model to write new ones."
    )


def test_a_file_onnxruntime_cannot_read_is_one_line(tmp_path):
    path = export_folder(tmp_path)
    path.write_bytes(b"not a protobuf\n\nat all")
    with pytest.raises(MedftError) as error:
        load_onnx_classifier(path)
    assert str(error.value).startswith(f"onnxruntime cannot load {path}: ")
    assert "\n" not in str(error.value)


def test_without_onnxruntime_the_extra_to_install_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MedftError) as error:
        onnx_session(tmp_path / "model.onnx")
    assert str(error.value) == "ONNX models run with onnxruntime: pip install 'medft[export]'."


def test_the_gpu_runs_the_model_where_onnxruntime_offers_it(tmp_path, monkeypatch):
    asked = {}

    def session(path, providers):
        asked.update(path=path, providers=providers)

    offered = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: offered)
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    onnx_session(tmp_path / "model.onnx")
    assert asked == {
        "path": str(tmp_path / "model.onnx"),
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    }
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: offered[2:])
    onnx_session(tmp_path / "model.onnx")
    assert asked["providers"] == ["CPUExecutionProvider"]
