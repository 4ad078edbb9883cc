"""Out-of-distribution flags: the statistics and their threshold, the flag rate under known
shifts, the saved file, and predict / evaluate / serve / calibrate with and without it."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.numpy import load_file

from medft.cli import main
from medft.commands.predict import format_prediction_summary, predict
from medft.commands.serve import answer, load_served_model
from medft.config.evaluation import EvaluateArguments
from medft.config.inference import PredictArguments
from medft.errors import MedftError
from medft.evaluation.external import TEST_SCORES_NAME
from medft.evaluation.reporting import format_evaluation
from medft.evaluation.saved_models import evaluate_model
from medft.inference.classifier import load_classifier
from medft.inference.ood import (
    OOD_COLUMNS,
    OOD_NAME,
    UNLIKE_TRAINING,
    OodStatistics,
    fit_statistics,
    flag_threshold,
)
from medft.parsing import parse_recipe
from medft.prepare.brain_tumor import CLASSES, NORMAL_CLASSES
from medft.prepare.synthetic import brain_scan
from medft.training.ood_statistics import readable, split_features
from medft.training.run_record import owned_files
from tests.helpers import FINDINGS, THREE

RATE = 0.1
IMAGES = 300  # per generated split: the binomial standard error of a 10% rate is 1.7 points


def flag_rate(statistics: OodStatistics, features: np.ndarray) -> float:
    return float(statistics.flagged(statistics.distances(features)).mean())


# the statistics ---------------------------------------------------------------------------------


def gaussian_features(rng, images: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes in 200 dimensions, as many as or more than the training images."""
    groups = rng.integers(0, 3, images)
    spread = np.linspace(0.2, 2.0, 200)
    return np.eye(3, 200)[groups] * 4 + rng.normal(0, 1, (images, 200)) * spread + shift, groups


def test_in_distribution_images_are_flagged_at_the_stated_rate_and_shifted_ones_more():
    rng = np.random.default_rng(0)
    features, groups = gaussian_features(rng, 150)  # fewer images than features
    statistics = fit_statistics(features, groups, gaussian_features(rng, IMAGES)[0], RATE)
    assert 0 < statistics.shrinkage < 1 and statistics.means.shape == (3, 200)
    rates = [flag_rate(statistics, gaussian_features(rng, 4000, s)[0]) for s in (0, 0.1, 0.3, 1)]
    assert rates[0] == pytest.approx(RATE, abs=0.04)
    assert rates == sorted(rates) and rates[-1] > 0.9


def test_the_threshold_is_the_split_conformal_quantile():
    distances = np.arange(1.0, 20.0)  # 19: rank ceil(20 * 0.9) = 18
    assert flag_threshold(distances, 0.1) == 18.0
    assert flag_threshold(distances[:5], 0.1) == 5.0  # too few for 10%: the largest


def test_a_single_label_task_centres_on_each_class_and_a_multi_label_one_on_one_group():
    assert THREE.feature_groups(np.array([0, 2, 1])).tolist() == [0, 2, 1]
    multi_hot = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    assert FINDINGS.feature_groups(multi_hot).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("rate", [0, 1, 1.5, -0.1])
def test_a_false_flag_rate_outside_zero_one_is_refused_in_one_line(rate, tmp_path):
    values = {"model_name_or_path": "vit", "dataset_name": "d", "output_dir": str(tmp_path)}
    with pytest.raises(MedftError, match=r"ood_false_flag_rate must be in \(0, 1\)") as error:
        parse_recipe(values=values | {"ood_false_flag_rate": rate})
    assert "\n" not in str(error.value)
    assert (
        parse_recipe(values=values | {"ood_false_flag_rate": None})[2].ood_false_flag_rate is None
    )


# known shifts on generated scans, through a trained model ---------------------------------------


def scans(first_seed: int) -> list[tuple[Image.Image, int]]:
    """Generated brain scans of all 44 classes, labelled normal (0) or tumour (1)."""
    return [
        (brain_scan(first_seed + i, name, 40), int(name not in NORMAL_CLASSES))
        for i, name in ((i, CLASSES[i % len(CLASSES)]) for i in range(IMAGES))
    ]


def as_split(items: list[tuple[Image.Image, int]]) -> Dataset:
    features = Features({"image": ImageFeature(), "label": Value("int64")})
    return Dataset.from_dict(
        {"image": [image for image, _ in items], "label": [label for _, label in items]},
        features=features,
    )


def contrast(image: Image.Image, factor: float) -> Image.Image:
    pixels = np.asarray(image, dtype=float)
    stretched = (pixels - pixels.mean()) * factor + pixels.mean()
    return Image.fromarray(np.clip(stretched, 0, 255).astype(np.uint8))


def noise(image: Image.Image, sd: float) -> Image.Image:
    pixels = np.asarray(image, dtype=float)
    noisy = pixels + np.random.default_rng(0).normal(0, sd, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def resolution(image: Image.Image, factor: int) -> Image.Image:
    small = image.resize((image.width // factor, image.height // factor), Image.BILINEAR)
    return small.resize(image.size, Image.BILINEAR)


SHIFTS = {
    "contrast": (contrast, (1.5, 2.5, 4.0)),
    "noise": (noise, (10, 30, 80)),
    "resolution": (resolution, (2, 4, 8)),
}


def test_the_flag_rate_rises_with_contrast_noise_and_resolution_shifts(trained_binary):
    """A washed-out image (contrast below 1) lies nearer the means and is not flagged: the
    distance measures how unusual the features are, not how much detail is missing."""
    classifier = load_classifier(trained_binary, device="cpu")

    def features(items):
        found = split_features(classifier, as_split(items), 64, 0)
        return found[readable(found)]

    train, held_out = scans(100_000), scans(300_000)
    statistics = fit_statistics(
        features(train), np.array([label for _, label in train]), features(scans(200_000)), RATE
    )
    assert flag_rate(statistics, features(held_out)) == pytest.approx(RATE, abs=0.06)
    for name, (shift, levels) in SHIFTS.items():
        rates = [
            flag_rate(statistics, features([(shift(image, level), y) for image, y in held_out]))
            for level in levels
        ]
        assert rates == sorted(rates), name
        assert rates[-1] > RATE + 0.2, name


# the file training saves ------------------------------------------------------------------------


def test_training_saves_the_statistics_as_safetensors_without_pickles(trained_binary):
    path = trained_binary / OOD_NAME
    data = path.read_bytes()  # safetensors: a JSON header, then raw float32 arrays
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert {entry["dtype"] for key, entry in header.items() if key != "__metadata__"} == {"F32"}
    tensors = load_file(path)
    assert set(tensors) == {"means", "precision"}
    assert tensors["means"].shape == (2, 32)  # normal and tumour, the tiny ViT's 32 features
    assert np.allclose(tensors["precision"], tensors["precision"].T, atol=1e-4)
    statistics = OodStatistics.load(trained_binary)
    assert statistics.false_flag_rate == 0.05 and statistics.threshold > 0
    assert path in owned_files(trained_binary)


def test_training_reports_the_test_split_s_flags_and_keeps_them_with_its_scores(trained_binary):
    """The run's evaluation counts the test images flagged, and the test scores kept for
    another site's comparison carry each image's flag (`medft.evaluation.external`)."""
    report = json.loads((trained_binary / "metrics.json").read_text())
    kept = load_file(trained_binary / TEST_SCORES_NAME)
    assert report["split"] == "test"
    assert report["ood"]["images"] == report["images"] == len(kept["flagged"])
    assert report["ood"]["flagged"] == int(kept["flagged"].sum())
    statistics = OodStatistics.load(trained_binary)
    assert report["ood"]["threshold"] == pytest.approx(statistics.threshold)


# predict, evaluate, serve, calibrate ------------------------------------------------------------


@pytest.fixture
def older_model(trained_binary, tmp_path):
    """The trained model as a release without the statistics saved it."""
    folder = tmp_path / "older"
    shutil.copytree(trained_binary, folder, ignore=shutil.ignore_patterns("checkpoint-*", OOD_NAME))
    return folder


def read_csv(path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_writes_each_image_s_score_and_flag(trained_binary, brain_binary, tmp_path):
    noise_image = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(noise_image)
    output = tmp_path / "predictions.csv"
    inputs = [str(brain_binary), str(noise_image), str(tmp_path / "missing.png")]
    summary = predict(
        PredictArguments(
            model=[trained_binary], inputs=inputs, output=output, num_workers=0, progress=False
        )
    )
    rows = read_csv(output)
    threshold = OodStatistics.load(trained_binary).threshold
    scored = [row for row in rows if not row["error"]]
    assert all(float(r["ood_score"]) >= 0 for r in scored)
    assert all(r["ood_flag"] == str(float(r["ood_score"]) > threshold).lower() for r in scored)
    missing = next(row for row in rows if row["path"].endswith("missing.png"))
    assert missing["ood_score"] == missing["ood_flag"] == ""
    assert next(r for r in rows if r["path"].endswith("noise.png"))["ood_flag"] == "true"
    assert summary.ood["images"] == len(scored)
    assert summary.ood["flagged"] == sum(r["ood_flag"] == "true" for r in scored)
    text = format_prediction_summary(summary)
    assert "out of distribution:" in text and "5% false-flag rate" in text


def test_an_older_folder_predicts_as_before_and_ood_asks_for_the_statistics(
    older_model, brain_binary, tmp_path, capsys
):
    output = tmp_path / "predictions.csv"
    options = {"inputs": [str(brain_binary)], "output": output, "num_workers": 0}
    summary = predict(PredictArguments(model=[older_model], progress=False, **options))
    assert not set(OOD_COLUMNS) & set(read_csv(output)[0]) and summary.ood is None
    assert "out of distribution" not in format_prediction_summary(summary)
    code = main(["predict", "--model", str(older_model), str(brain_binary), "--ood", "true",
                 "--output", str(output), "--num-workers", "0"])  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' progress bar
    assert code == 2 and error.startswith("medft: error: --ood true: ")
    assert f"has no {OOD_NAME}" in error and "leave out --ood" in error
    with pytest.raises(MedftError, match="not an ensemble"):
        predict(PredictArguments(model=[older_model, older_model], ood=True, **options))


def test_predict_ood_false_leaves_the_columns_out(trained_binary, brain_binary, tmp_path):
    output = tmp_path / "predictions.csv"
    options = {"inputs": [str(brain_binary)], "output": output, "num_workers": 0}
    predict(PredictArguments(model=[trained_binary], progress=False, ood=False, **options))
    assert not set(OOD_COLUMNS) & set(read_csv(output)[0])


def test_evaluate_reports_how_many_images_are_flagged(trained_binary, brain_binary, tmp_path):
    code = main(["evaluate", "--model", str(trained_binary), "--dataset", str(brain_binary),
                 "--output", str(tmp_path), "--bootstrap-resamples", "0"])  # fmt: skip
    assert code == 0
    ood = json.loads((tmp_path / "metrics.json").read_text())["ood"]
    assert ood["images"] == json.loads((tmp_path / "metrics.json").read_text())["images"]
    assert 0 <= ood["flagged"] <= ood["images"] and ood["rate"] == ood["flagged"] / ood["images"]
    assert ood["false_flag_rate"] == 0.05 and "Mahalanobis" in ood["method"]
    options = {"dataset": str(brain_binary), "bootstrap_resamples": 0}
    report, _ = evaluate_model(EvaluateArguments(model=[trained_binary], ood=False, **options))
    assert report.ood is None and "out of distribution" not in format_evaluation(report)


def test_evaluate_of_an_older_folder_has_no_flags(older_model, brain_binary):
    options = {"dataset": str(brain_binary), "bootstrap_resamples": 0}
    report, _ = evaluate_model(EvaluateArguments(model=[older_model], **options))
    assert report.ood is None and "ood" not in report.to_json()
    with pytest.raises(MedftError, match=f"has no {OOD_NAME}"):
        evaluate_model(EvaluateArguments(model=[older_model], ood=True, **options))


def test_serve_says_when_an_image_is_unlike_the_training_images(
    trained_binary, older_model, brain_raw
):
    scans_shown = [str(path) for path in sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[:2]]
    served = load_served_model(trained_binary)
    assert served.ood is not None
    everything = dataclasses.replace(served, ood=dataclasses.replace(served.ood, threshold=-1.0))
    text = answer(everything)(scans_shown, False)[0].replace("\\", "")
    assert text.count(UNLIKE_TRAINING) == 2
    nothing = dataclasses.replace(served, ood=dataclasses.replace(served.ood, threshold=np.inf))
    assert UNLIKE_TRAINING not in answer(nothing)(scans_shown, False)[0].replace("\\", "")
    older = load_served_model(older_model)
    assert older.ood is None
    assert UNLIKE_TRAINING not in answer(older)(scans_shown, False)[0].replace("\\", "")


def test_calibrate_carries_the_statistics_to_the_new_folder(trained_binary, brain_binary, tmp_path):
    output = tmp_path / "calibrated"
    code = main(["calibrate", "--model", str(trained_binary), "--dataset", str(brain_binary),
                 "--output", str(output), "--bootstrap-resamples", "0"])  # fmt: skip
    assert code == 0
    assert (output / OOD_NAME).read_bytes() == (trained_binary / OOD_NAME).read_bytes()
    assert "ood" in json.loads((output / "metrics.json").read_text())
