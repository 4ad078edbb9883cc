"""Temperature scaling: fitted by the task's loss, folded into the classifier, served as it is."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from medft.cli import main
from medft.errors import MedftError
from medft.evaluation.calibration import TEMPERATURE_RANGE, fit_temperature
from medft.modeling import build_model
from medft.modeling.heads import fold_prior_shift, fold_temperature
from medft.tasks import TaskInfo
from tests.helpers import FINDINGS, THREE, run_recipe, tiny_timm, tiny_vit


@pytest.mark.parametrize(
    "args,task,temperature",
    [(tiny_vit, THREE, [2.5]), (tiny_timm, FINDINGS, [0.5, 4.0])],
    ids=["vit, one temperature", "timm, one per finding"],
)
def test_the_folded_model_divides_its_logits_by_the_temperature(args, task, temperature):
    built = build_model(args(), task)
    model = built.model.eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
        fold_temperature(model, built.layout.head_module, np.array(temperature))
        after = model(pixel_values=pixels).logits
    assert after == pytest.approx(before / torch.tensor(temperature), abs=1e-5)


@pytest.mark.parametrize(
    "args,task,shift",
    [(tiny_vit, THREE, [0.5, -1.0, 0.2]), (tiny_timm, FINDINGS, [1.0, -2.0])],
    ids=["vit, a shift per class", "timm, a shift per finding"],
)
def test_the_folded_prior_shift_adds_to_the_logits(args, task, shift):
    built = build_model(args(), task)
    model = built.model.eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
        fold_prior_shift(model, built.layout.head_module, np.array(shift))
        after = model(pixel_values=pixels).logits
    assert after == pytest.approx(before + torch.tensor(shift), abs=1e-5)


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 3))
    probs = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    assert fit_temperature(logits, labels, THREE)[0] == pytest.approx(3.0, rel=0.08)
    findings = TaskInfo(["a", "b"], multi_label=True, label_column="labels")
    logits = rng.normal(0, 4, (4000, 2))
    targets = (rng.random((4000, 2)) < 1 / (1 + np.exp(-logits / np.array([0.5, 2.0])))) * 1.0
    fitted = fit_temperature(logits, targets, findings, per_label=True)
    assert fitted == pytest.approx([0.5, 2.0], rel=0.1)


def test_a_split_that_separates_the_labels_cannot_drive_the_temperature_to_zero(caplog):
    """One validation image, a finding no image of the split has, scores on the right side
    of every image: the loss falls without end as T goes to 0 (seen in a run: T = 0.0 for
    rare findings, a test loss of 3.4 million). T = 1 is kept, and said."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (200, 3))
    separated = np.where(logits[:, 0] > 0, 1.0, 0.0)
    drawn = rng.random(200) < 1 / (1 + np.exp(-logits[:, 1] / 2.0))
    targets = np.stack([separated, drawn, np.zeros(200)], axis=1)
    findings = TaskInfo(["separated", "drawn", "never"], multi_label=True, label_column="labels")
    with caplog.at_level("WARNING", logger="medft"):
        fitted = fit_temperature(logits, targets, findings, per_label=True)
        one_image = fit_temperature(np.array([[4.0, -1.0, 0.5]]), np.array([0]), THREE)
        two_images = fit_temperature(np.array([[4.0, -1.0, 0.5], [0.0, 3.0, 1.0]]),
                                     np.array([0, 1]), THREE)  # fmt: skip
    assert fitted[0] == 1.0 and fitted[1] == pytest.approx(2.0, rel=0.25) and fitted[2] == 1.0
    assert one_image[0] == 1.0 and two_images[0] == 1.0
    assert "every image on the right side for separated" in caplog.text
    assert "never has one value in every image" in caplog.text
    assert "the label has one value in every image" in caplog.text
    assert "every image on the right side for the label;" in caplog.text


def test_the_temperature_stays_within_its_range(caplog):
    """Scores 100 times too timid: T is held at the range's edge, and said."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 0.03, (2000, 3))
    probs = np.exp(logits * 100) / np.exp(logits * 100).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in probs])
    with caplog.at_level("WARNING", logger="medft"):
        (temperature,) = fit_temperature(logits, labels, THREE)
    assert temperature == pytest.approx(TEMPERATURE_RANGE[0], rel=0.05)
    assert "held at the edge" in caplog.text


def test_calibrate_lowers_the_ece_of_an_over_confident_model(
    trained_binary, brain_binary, tmp_path
):
    folder = tmp_path / "overconfident"
    shutil.copytree(trained_binary, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    model = AutoModelForImageClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.mul_(8)  # logits 8x too large: probabilities near 0 and 1
        model.classifier.bias.mul_(8)
    model.save_pretrained(folder)
    scan = Image.new("L", (40, 40), 120)
    inputs = pipeline("image-classification", model=str(folder)).image_processor(
        images=scan.convert("RGB"), return_tensors="pt"
    )
    with torch.no_grad():
        logits = model.eval()(**inputs).logits[0]

    assert main(["calibrate", "--model", str(folder), "--dataset", str(brain_binary),
                 "--bootstrap-resamples", "0"]) == 0  # fmt: skip
    report = json.loads((folder / "metrics.json").read_text())
    temperature = report["temperature"]["values"][0]
    assert temperature > 2  # it undid much of the 8x
    assert report["calibration"]["ece"] < report["temperature"]["ece_before"]
    assert report["thresholds"]["tuned_on"] == "validation"  # re-tuned on calibrated scores
    served = {
        s["label"]: s["score"] for s in pipeline("image-classification", model=str(folder))(scan)
    }
    expected = torch.softmax(logits / temperature, -1)
    assert [served["normal"], served["tumor"]] == pytest.approx(expected.tolist(), abs=1e-4)
    card = (folder / "README.md").read_text()
    assert "The probabilities are calibrated" in card and "reliability_diagram_uncalibrated" in card


def test_a_recipe_calibrates_after_training(brain_binary, tmp_path):
    output = tmp_path / "model"
    run_recipe("tiny_timm.yaml", brain_binary, output, "--calibration", "temperature")
    report = json.loads((output / "metrics.json").read_text())
    assert report["temperature"]["fitted_on"] == "validation"
    assert len(report["temperature"]["values"]) == 1
    assert (output / "reliability_diagram_uncalibrated.png").is_file()
    assert "The probabilities are calibrated" in (output / "README.md").read_text()


def test_one_temperature_per_finding_on_single_label_data_stops_before_training(
    brain_binary, tmp_path
):
    output = tmp_path / "model"
    with pytest.raises(MedftError, match="temperature_per_finding needs multi-label data"):
        run_recipe("tiny_timm.yaml", brain_binary, output, "--calibration",
                   "temperature_per_finding")  # fmt: skip
    assert not list(output.glob("checkpoint-*"))  # nothing was trained


def test_a_local_fit_folds_the_prior_shift_and_the_card_records_the_sample(
    trained_binary, brain_binary, tmp_path, capsys
):
    output = tmp_path / "site"
    assert main(["calibrate", "--model", str(trained_binary), "--dataset", str(brain_binary),
                 "--output", str(output), "--prior-shift", "--bootstrap-resamples", "0",
                 "--num-workers", "0"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Fitted on the validation split of brain2, 50 images:" in printed
    (fit,) = json.loads((output / "local_fit.json").read_text())["fits"]
    assert (fit["dataset"], fit["split"], fit["images"]) == ("brain2", "validation", 50)
    assert fit["ece_after"] < fit["ece_before"]
    shift = [fit["prior_shift"][name]["logit_shift"] for name in ("normal", "tumor")]
    bias = {
        folder: AutoModelForImageClassification.from_pretrained(folder).classifier.bias.detach()
        for folder in (trained_binary, output)
    }
    expected = bias[trained_binary] / fit["temperature"][0] + torch.tensor(shift)
    assert bias[output].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert fit["thresholds_after"]["tumor"] != fit["thresholds_before"]["tumor"]
    card = (output / "README.md").read_text()
    section = card[card.index("## Local recalibration") : card.index("## Results on the")]
    assert "the validation split of brain2, 50 images" in section
    assert "prior shift folded into the classifier's bias" in section and "normal 0." in section
    assert "thresholds re-tuned on this sample: tumor" in section
    assert str(tmp_path) not in card + json.dumps(fit)  # names, never paths

    again = tmp_path / "again"  # a second fit on top of the first: both recorded
    assert main(["calibrate", "--model", str(output), "--dataset", str(brain_binary),
                 "--output", str(again), "--tune-split", "test", "--split", "validation",
                 "--bootstrap-resamples", "0", "--num-workers", "0"]) == 0  # fmt: skip
    assert [fit["split"] for fit in json.loads((again / "local_fit.json").read_text())["fits"]] == [
        "validation",
        "test",
    ]
    assert "WARNING: the validation split of brain2 is a local sample again" in (
        capsys.readouterr().out
    )  # evaluated on the first fit's sample
    card = (again / "README.md").read_text()
    assert card.count("## Local recalibration") == 1 and "Re-fitted before that on: the " in card


def test_the_fitting_sample_is_never_the_test_and_an_older_model_lacks_the_prevalence(
    trained_binary, brain_binary, tmp_path, capsys
):
    assert main(["calibrate", "--model", str(trained_binary), "--dataset", str(brain_binary),
                 "--split", "validation"]) == 2  # fmt: skip
    assert "--split validation is also --tune-split" in capsys.readouterr().err
    older = tmp_path / "older"
    shutil.copytree(trained_binary, older, ignore=shutil.ignore_patterns("checkpoint-*"))
    (older / "training_labels.json").unlink()
    assert main(["calibrate", "--model", str(older), "--dataset", str(brain_binary),
                 "--prior-shift"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "--prior-shift needs the training label prevalence" in error
    assert len(error.strip().splitlines()) == 1
