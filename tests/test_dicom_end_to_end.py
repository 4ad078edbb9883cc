"""From a folder of DICOM files to a trained model and predictions on .dcm files.

A 16-bit dataset, windowed at train time by the recipe's `dicom_window`, trains a tiny
random-init timm ResNet-18; the model folder records the DICOM settings, and `medft
predict`, `medft explain`, `medft evaluate` and plain `pipeline()` on `medft.load_image`
all read new files alike.
"""

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
from datasets import load_from_disk
from transformers import pipeline

import medft
from medft.cli import main
from medft.commands.explain import explain
from medft.commands.predict import predict
from medft.config import DataArguments
from medft.config.evaluation import EvaluateArguments
from medft.config.inference import ExplainArguments, ExportArguments, PredictArguments
from medft.config.prepare import DicomArguments
from medft.data.pipeline import dicom_settings
from medft.errors import MedftError
from medft.evaluation.saved_models import evaluate_model
from medft.formats.dicom_settings import DicomSettings, load_settings, parse_window, save_settings
from medft.prepare import prepare_dataset
from tests.dicom_files import dicom_copy, pydicom_file
from tests.helpers import FIXTURES, run_recipe

PER_CLASS = 12


def write_classes(root):
    """'lesion' scans carry a bright square that 'clear' ones lack; one patient per file."""
    plain = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    for index in range(PER_CLASS):
        dicom_copy("CT_small.dcm", root / "clear" / f"c{index}.dcm", PatientID=f"C{index}")
        pixels = plain.pixel_array.copy()
        pixels[40:90, 40:90] = 2000  # ~ +1000 HU: bright in the lung window
        dicom_copy(
            "CT_small.dcm",
            root / "lesion" / f"l{index}",
            PatientID=f"L{index}",
            PixelData=pixels.tobytes(),
        )
    return root


def write_new_studies(folder):
    dicom_copy("CT_small.dcm", folder / "IM0001", PatientID="new")  # no extension
    dicom_copy("SC_rgb_rle_2frame.dcm", folder / "two_frames.dcm")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_e2e")
    raw = write_classes(root / "raw")
    write_new_studies(root / "new")
    dataset = root / "data"
    # every file is a copy of one real scan: near-copy groups would (rightly) join them all
    prepare_dataset(
        DicomArguments(output=dataset, source=raw, bit_depth=16, num_proc=1, near_duplicates="off")
    )  # no window yet
    model = root / "model"
    run_recipe("tiny_timm.yaml", dataset, model, "--bootstrap_resamples", "20",
               "--dicom_window", "lung")  # fmt: skip
    return raw, dataset, model


def test_the_model_folder_records_the_dicom_settings(trained, tmp_path):
    _, dataset, model = trained
    assert load_settings(model) == DicomSettings(window=parse_window("lung"), bit_depth=16)
    assert dicom_settings(DataArguments(str(dataset))) == DicomSettings(bit_depth=16)
    eight_bit = tmp_path / "eight_bit"
    prepare_dataset(
        DicomArguments(output=eight_bit, source=trained[0], num_proc=1, near_duplicates="off")
    )
    with pytest.raises(MedftError, match="dicom_window needs a dataset prepared with"):
        dicom_settings(DataArguments(str(eight_bit), dicom_window="lung"))
    with pytest.raises(MedftError, match="dicom_window 'lungs'"):
        DataArguments(str(dataset), dicom_window="lungs")
    assert json.loads((model / "dicom.json").read_text())["window"] == {
        "center": -600.0,
        "width": 1500.0,
    }


def test_predict_on_dicom_files_matches_pipeline_on_load_image(trained, tmp_path):
    raw, _, model = trained
    new = raw.parent / "new"
    output = tmp_path / "predictions.csv"
    summary = predict(
        PredictArguments(
            model=[model],
            inputs=[raw / "clear", raw / "lesion" / "l0", new],
            output=output,
            num_workers=0,
            progress=False,
        )
    )
    with output.open(newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert summary.images == PER_CLASS + 3 and not summary.errors
    assert summary.ignored == {"not an image extension (.txt)": 1}
    classify = pipeline("image-classification", model=str(model))
    for path in (
        raw / "clear" / "c0.dcm",
        raw / "lesion" / "l0",
        new / "IM0001",
        new / "two_frames.dcm",
    ):
        expected = classify(medft.load_image(path, model))[0]
        row = rows[str(path)]
        assert row["error"] == "" and row["label_1"] == expected["label"]
        assert float(row["score_1"]) == pytest.approx(expected["score"], abs=1e-4)


def test_a_model_trained_on_every_frame_predicts_every_frame(trained, tmp_path):
    raw, _, model = trained
    every_frame = tmp_path / "model"
    shutil.copytree(model, every_frame)
    save_settings(
        every_frame, DicomSettings(window=parse_window("lung"), bit_depth=16, frames="all")
    )
    path = raw.parent / "new" / "two_frames.dcm"
    output = tmp_path / "predictions.csv"
    predict(
        PredictArguments(
            model=[every_frame], inputs=[path], output=output, num_workers=0, progress=False
        )
    )
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [f"{path} (frame 0)", f"{path} (frame 1)"]
    classify = pipeline("image-classification", model=str(every_frame))
    for frame, row in enumerate(rows):
        expected = classify(medft.load_image(path, every_frame, frame=frame))[0]
        assert float(row["score_1"]) == pytest.approx(expected["score"], abs=1e-4)


def test_load_image_windows_as_the_model_was_trained(trained):
    raw, _, model = trained
    lesion = np.asarray(medft.load_image(raw / "lesion" / "l0", model))
    assert lesion.shape == (128, 128, 3) and lesion[60, 60].tolist() == [255, 255, 255]
    own_window = np.asarray(medft.load_image(raw / "lesion" / "l0"))  # no model: min-max
    assert not np.array_equal(lesion, own_window)


def test_evaluate_and_explain_read_the_sixteen_bit_dataset(trained, tmp_path):
    raw, dataset, model = trained
    report, scores = evaluate_model(
        EvaluateArguments(model=[model], dataset=str(dataset), num_workers=0)
    )
    assert not report.unreadable and len(scores.labels) > 0
    summary = explain(
        ExplainArguments(
            model=model, images=[raw / "lesion" / "l1"], output=tmp_path / "maps", progress=False
        )
    )
    assert len(summary.written) == 1 and not summary.errors


def test_an_exported_model_and_the_web_page_read_dicom_as_the_model_folder_does(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gradio")
    from medft.commands.export import export_onnx
    from medft.commands.serve import answer, escaped, load_served_model

    raw, _, model = trained
    scans = [raw / "lesion" / "l0", raw / "clear" / "c0.dcm"]
    exported = tmp_path / "onnx" / "model.onnx"
    export_onnx(ExportArguments(model=model, output=exported))
    assert json.loads((exported.parent / "preprocessor.json").read_text())["dicom"] == (
        load_settings(model).to_dict()
    )
    scores = {}
    for where in (model, exported):
        output = tmp_path / f"{where.name}.csv"
        predict(
            PredictArguments(
                model=[where], inputs=scans, output=output, num_workers=0, progress=False
            )
        )
        with output.open(newline="") as handle:
            scores[where] = [float(row["score_1"]) for row in csv.DictReader(handle)]
    assert scores[exported] == pytest.approx(scores[model], abs=1e-4)
    text, gallery, _ = answer(load_served_model(model))([str(path) for path in scans], False)
    assert text.startswith("2 of 2 file(s) classified") and len(gallery) == 2
    expected = pipeline("image-classification", model=str(model))(medft.load_image(scans[0], model))
    assert escaped(f"{expected[0]['score']:.3f}") in text  # the page's Markdown, escaped


def test_files_without_patient_id_prepare_cross_validate_and_evaluate(tmp_path, capsys):
    """PACS exports hold files without PatientID; prepare keeps them, grouped by their study
    (else alone), and every later command reads the dataset: `medft cv` (each fold a whole
    `train()`, evaluated at its end) and `medft evaluate`."""
    raw = write_classes(tmp_path / "raw")
    for index, path in enumerate(sorted(p for p in raw.rglob("*") if p.is_file())):
        ds = pydicom.dcmread(path)
        del ds.PatientID
        if index % 2:
            del ds.StudyInstanceUID
        else:  # two files a study
            ds.StudyInstanceUID = f"1.2.3.{index // 4}"
        ds.save_as(path)
    dataset = tmp_path / "data"
    report = prepare_dataset(
        DicomArguments(output=dataset, source=raw, num_proc=1, near_duplicates="off")
    )
    assert report["notes"]["files_without_patient_id_grouped_by_study"] == PER_CLASS
    assert report["notes"]["patients"] == 0
    assert report["notes"]["files_without_patient_or_study_id"] == PER_CLASS
    rows = [row for split in load_from_disk(str(dataset)).values() for row in split]
    assert all(row["patient_id"] for row in rows)  # each file's group: its study, else itself
    by_study = {}
    for row in rows:
        by_study.setdefault(row["study_id"], set()).add(row["patient_id"])
    assert {len(patients) for study, patients in by_study.items() if study} == {1}
    cv = tmp_path / "cv"
    code = main(["cv", str(FIXTURES / "tiny_timm.yaml"), "--folds", "2",
                 "--dataset_name", str(dataset), "--output_dir", str(cv),
                 "--bootstrap_resamples", "20"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((cv / "fold-0" / "metrics.json").read_text())
    assert metrics["bootstrap"]["unit"] == "patient"
    code = main(["evaluate", "--model", str(cv / "fold-0"), "--dataset", str(dataset),
                 "--num-workers", "0", "--output", str(tmp_path / "evaluation")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["patients"] > 0
