"""`medft predict` on trained test models: batched scores equal pipeline()'s, bad files get rows."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from transformers import pipeline

from medft.cli import main
from medft.commands.predict import format_prediction_summary, predict, prediction_rows
from medft.config.inference import PredictArguments
from medft.errors import MedftError
from medft.formats.image_files import is_image_file
from medft.inference.classifier import load_classifier
from medft.inference.inputs import collect_inputs
from medft.tasks import TaskInfo
from tests.helpers import DAMAGES, as_pytorch_bin, damage, save_tiny_model
from tests.oversized import constant_png, rle_dicom

BAD_FILES = ("empty.jpg", "notes.jpg", "truncated.jpeg")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_single_label_rows_match_pipeline_and_bad_files_do_not_stop_the_run(
    trained_binary, brain_raw, tmp_path
):
    folder = brain_raw / "Glioblastoma T2"  # scans, three broken files and a Thumbs.db-free mix
    missing = tmp_path / "missing.png"
    output = tmp_path / "predictions.csv"
    summary = predict(
        PredictArguments(
            model=[trained_binary],
            inputs=[folder, missing],
            output=output,
            num_workers=1,
            progress=False,
        )
    )

    rows = read_rows(output)
    scans = [p for p in folder.iterdir() if is_image_file(p) and p.name not in BAD_FILES]
    assert len(rows) == len(scans) + len(BAD_FILES) + 1 == summary.images
    errors = {Path(row["path"]).name: row["error"] for row in rows if row["error"]}
    assert set(errors) == {*BAD_FILES, "missing.png"} and set(summary.errors) == {
        str(folder / name) for name in BAD_FILES
    } | {str(missing)}
    assert "truncated" in errors["truncated.jpeg"] and "no such file" in errors["missing.png"]

    classifier = pipeline("image-classification", model=str(trained_binary))
    threshold = json.loads((trained_binary / "thresholds.json").read_text())["values"]["tumor"]
    for row in (row for row in rows if not row["error"]):
        expected = {s["label"]: s["score"] for s in classifier(row["path"], top_k=2)}
        assert row["label_1"] == max(expected, key=expected.get)
        assert float(row["score_1"]) == pytest.approx(expected[row["label_1"]], abs=1e-5)
        assert float(row["score_2"]) == pytest.approx(expected[row["label_2"]], abs=1e-5)
        assert row["decision"] == ("tumor" if expected["tumor"] >= threshold else "normal")
    text = format_prediction_summary(summary)
    assert "unreadable: 4" in text and "tuned on validation" in text and str(output) in text


def test_multilabel_rows_flag_each_finding_at_its_stored_threshold(
    trained_multilabel, nih_prepared, tmp_path
):
    output = tmp_path / "predictions.csv"
    summary = predict(
        PredictArguments(
            model=[trained_multilabel],
            inputs=[nih_prepared],
            output=output,
            num_workers=0,
            progress=False,
        )
    )
    rows = read_rows(output)
    test = load_from_disk(str(nih_prepared))["test"]
    assert len(rows) == len(test) and not summary.errors
    assert rows[0]["path"] == f"{nih_prepared}:test:{test[0]['image_id']}"
    thresholds = json.loads((trained_multilabel / "thresholds.json").read_text())["values"]
    for row in rows:
        flagged = {name for name, cut in thresholds.items() if float(row[name]) >= cut}
        assert set(filter(None, row["findings"].split(";"))) == flagged
    classifier = pipeline("image-classification", model=str(trained_multilabel))
    expected = {s["label"]: s["score"] for s in classifier(test[0]["image"], top_k=14)}
    assert {name: float(rows[0][name]) for name in expected} == pytest.approx(expected, abs=1e-5)


def test_bf16_keeps_the_fp32_ranking_and_fp16_needs_a_gpu(
    trained_multilabel, nih_prepared, tmp_path
):
    scores = {}
    for precision in ("fp32", "bf16"):
        output = tmp_path / f"{precision}.csv"
        predict(
            PredictArguments(
                model=[trained_multilabel],
                inputs=[nih_prepared],
                output=output,
                num_workers=0,
                precision=precision,
                columns=[],
                ood=False,  # the probabilities are compared
                progress=False,
            )
        )
        scores[precision] = [
            [float(row[name]) for name in row if name not in ("path", "findings", "error")]
            for row in read_rows(output)
        ]
    assert np.asarray(scores["bf16"]) == pytest.approx(np.asarray(scores["fp32"]), abs=0.02)
    if not torch.cuda.is_available():
        with pytest.raises(MedftError, match="fp16 needs a GPU"):
            predict(
                PredictArguments(
                    model=[trained_multilabel],
                    inputs=[nih_prepared],
                    output=tmp_path / "x.csv",
                    precision="fp16",
                )
            )
    with pytest.raises(MedftError, match="must be one of fp32, bf16, fp16"):
        predict(
            PredictArguments(
                model=[trained_multilabel],
                inputs=[nih_prepared],
                output=tmp_path / "x.csv",
                precision="int8",
            )
        )


def test_rows_hold_the_top_k_labels_and_the_reason_a_file_failed():
    four = TaskInfo(["a", "b", "c", "d"], multi_label=False)
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [np.nan] * 4])
    header, rows = prediction_rows(four, ["x.png", "bad.png"], probs, {1: "OSError: broken"}, 3, {})
    assert header == [
        "path",
        "error",
        "label_1",
        "score_1",
        "label_2",
        "score_2",
        "label_3",
        "score_3",
    ]
    assert rows == [
        ["x.png", "", "d", "0.400000", "c", "0.300000", "b", "0.200000"],
        ["bad.png", "OSError: broken", "", "", "", "", "", ""],
    ]


def test_inputs_are_files_folders_and_prepared_splits(brain_raw, brain_binary, tmp_path):
    found = collect_inputs([brain_raw / "Meningioma T1C+", brain_binary], split="validation")
    assert found.ignored["system file (Thumbs.db)"] == 1
    validation = load_from_disk(str(brain_binary))["validation"]
    assert len(found.names) == len(found.files) + len(validation)
    with pytest.raises(MedftError, match="has no split 'tset'"):
        collect_inputs([brain_binary], split="tset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedftError, match="found no images"):
        collect_inputs([tmp_path / "empty"])


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(MedftError, match="is not a saved model"):
        predict(PredictArguments(model=[tmp_path], inputs=[tmp_path], output=tmp_path / "p.csv"))


@pytest.mark.parametrize("family", ["vit", "timm"])
@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_weights_file_is_one_line_naming_it(family, how, tmp_path):
    folder = save_tiny_model(tmp_path / "model", family)
    weights = damage(folder / "model.safetensors", how)
    with pytest.raises(MedftError) as error:
        load_classifier(folder)
    message = str(error.value)
    assert message.startswith(f"the weights file {weights} is ") and "\n" not in message
    assert message.endswith("save the model again (save_pretrained) or download it again.")
    assert {
        "truncated": "damaged or incomplete (SafetensorError",
        "empty": "is empty",
        "git_lfs_pointer": "a Git LFS pointer",
    }[how] in message


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_pytorch_model_bin_is_one_line_naming_it(how, tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "model")
    weights = damage(as_pytorch_bin(folder), how)
    capsys.readouterr()  # the progress bar of the save
    code = main(["predict", "--model", str(folder), str(tmp_path), "--output", str(tmp_path / "p")])
    printed = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(printed) == 1
    problem = "empty" if how == "empty" else "damaged or incomplete ("
    assert printed[0].startswith(f"medft: error: the weights file {weights} is {problem}")
    assert printed[0].endswith(": save the model again (save_pretrained) or download it again.")


def test_images_over_the_pixel_budget_get_error_rows(trained_binary, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFT_MAX_MEGAPIXELS", raising=False)
    bombs = [
        constant_png(tmp_path / "bomb.png", 12_000, 12_000),  # 140 KB, 144 megapixels
        rle_dicom(tmp_path / "bomb.dcm", 10_000, 10_000),  # 1.6 MB, 100 megapixels
    ]
    output = tmp_path / "predictions.csv"
    summary = predict(
        PredictArguments(
            model=[trained_binary], inputs=bombs, output=output, num_workers=0, progress=False
        )
    )
    errors = {Path(row["path"]).name: row["error"] for row in read_rows(output)}
    assert len(summary.errors) == 2
    too_large = "ImageTooLarge: image too large to decode safely: "
    assert errors["bomb.png"].startswith(too_large + "144000000 pixels (144.0 megapixels)")
    assert errors["bomb.dcm"].startswith(too_large + "10000 x 10000 pixels (100.0 megapixels)")

    scan = constant_png(tmp_path / "scan.png", 1200, 1000)  # in the decoding worker process:
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "1")
    predict(
        PredictArguments(
            model=[trained_binary], inputs=[scan], output=output, num_workers=1, progress=False
        )
    )
    assert read_rows(output)[0]["error"].startswith(too_large + "1200000 pixels")
    monkeypatch.setenv("MEDFT_MAX_MEGAPIXELS", "1.5")
    predict(
        PredictArguments(
            model=[trained_binary], inputs=[scan], output=output, num_workers=1, progress=False
        )
    )
    assert read_rows(output)[0]["error"] == "" and read_rows(output)[0]["label_1"]
