"""Conformal prediction sets: coverage per class (and per finding and state) checked over many
random calibration / test splits of generated scores, the edge cases, and the sets going from
`medft calibrate --conformal` into predict, evaluate, serve and the ONNX export."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, softmax

from medft.cli import main
from medft.commands.predict import PREDICTION_SET
from medft.commands.serve import answer, load_served_model
from medft.config.evaluation import CalibrateArguments, EvaluationOptions
from medft.errors import MedftError
from medft.evaluation.conformal import (
    CONFORMAL_NAME,
    ConformalSets,
    conformal_coverage,
    fit_conformal,
    load_conformal,
    needed_images,
)
from medft.evaluation.evaluate import SplitScores
from medft.inference.classifier import saved_task
from medft.tasks import TaskInfo
from tests.helpers import FINDINGS, THREE, run_recipe

ALPHA = 0.1
SPLITS = 200  # random calibration / test splits of one pool of held-out scores


def single_label_pool(rng, images=3000):
    """Softmax scores of a known model: classes drawn 60 / 30 / 10%, the true class's logit
    raised over N(0, 1) noise by 2, 2, and 1 for the rare class, which the model knows less
    well."""
    labels = rng.choice(3, images, p=[0.6, 0.3, 0.1])
    logits = rng.normal(0, 1, (images, 3))
    logits[np.arange(images), labels] += np.array([2.0, 2.0, 1.0])[labels]
    return softmax(logits, axis=1), labels


def multilabel_pool(rng, images=3000):
    """Sigmoid scores of two findings present in 30% and 10% of images, logit +-1 around the
    truth with N(0, 1.5) noise: the states overlap, so some sets hold both."""
    labels = (rng.random((images, 2)) < [0.3, 0.1]).astype(float)
    return expit(rng.normal(0, 1.5, (images, 2)) + (2 * labels - 1)), labels


def coverage_over_splits(task, probs, labels, rng):
    """Per state, its coverage on the test half of each random split, the calibration and
    test images of that state, and the mean set size (states per group)."""
    truth = task.true_states(labels)
    coverage, calibrated, tested, sizes = [], [], [], []
    groups = len(dict.fromkeys(task.state_groups))
    for _ in range(SPLITS):
        order = rng.permutation(len(probs))
        calibration, test = order[: len(order) // 2], order[len(order) // 2 :]
        sets = fit_conformal(task, probs[calibration], labels[calibration], ALPHA, "cal", None)
        included = sets.included(task, probs[test])
        coverage.append((included & truth[test]).sum(0) / truth[test].sum(0))
        calibrated.append(truth[calibration].sum(0))
        tested.append(truth[test].sum(0))
        sizes.append(included.sum() / (len(test) * groups))
    return np.array(coverage), np.array(calibrated), np.array(tested), np.array(sizes)


def binomial_tolerance(calibrated: np.ndarray, tested: np.ndarray) -> np.ndarray:
    """Three standard errors of the mean coverage over the splits: each split's coverage
    varies by the calibration's order statistic (Beta, variance alpha (1 - alpha) / (n + 2))
    and by the binomial draw of the test images."""
    spread = ALPHA * (1 - ALPHA)
    variance = spread / (calibrated.mean(0) + 2) + spread / tested.mean(0)
    return 3 * np.sqrt(variance / SPLITS)


def test_class_conditional_sets_cover_every_class_over_random_splits():
    rng = np.random.default_rng(0)
    probs, labels = single_label_pool(rng)
    coverage, calibrated, tested, sizes = coverage_over_splits(THREE, probs, labels, rng)
    tolerance = binomial_tolerance(calibrated, tested)
    assert np.all(coverage.mean(0) >= 1 - ALPHA - tolerance)  # the rare class too (10%)
    # informative: not every class in every set, and no class far above its target
    assert 1.1 < sizes.mean() < 2.0
    assert np.all(coverage.mean(0) <= 1 - ALPHA + 1 / (calibrated.mean(0) + 1) + tolerance)


def test_per_finding_sets_cover_each_state_over_random_splits():
    rng = np.random.default_rng(1)
    probs, labels = multilabel_pool(rng)
    coverage, calibrated, tested, sizes = coverage_over_splits(FINDINGS, probs, labels, rng)
    assert np.all(coverage.mean(0) >= 1 - ALPHA - binomial_tolerance(calibrated, tested))
    assert 1.0 < sizes.mean() < 1.9  # some findings undecided, most not


def test_without_class_conditional_calibration_the_rare_class_falls_short():
    """Why Mondrian: one threshold for all classes covers 90% of images, not of each class."""
    rng = np.random.default_rng(2)
    probs, labels = single_label_pool(rng, 20000)
    pooled = 1 - probs[np.arange(len(labels)), labels]
    cut = np.sort(pooled)[int(np.ceil(0.9 * (len(pooled) + 1))) - 1]
    rare = labels == 2
    assert (1 - probs[rare, 2] <= cut).mean() < 0.85
    sets = fit_conformal(THREE, probs, labels, ALPHA, "cal", None)
    assert sets.included(THREE, probs)[rare, 2].mean() >= 0.9


def test_a_class_with_too_few_calibration_images_is_always_in_the_set():
    assert needed_images(0.1) == 9 and needed_images(0.2) == 4 and needed_images(0.5) == 1
    rng = np.random.default_rng(3)
    probs = softmax(rng.normal(0, 1, (40, 3)), axis=1)
    labels = np.array([0] * 23 + [1] * 9 + [2] * 8)  # 9 is enough at alpha 0.1, 8 is not
    sets = fit_conformal(THREE, probs, labels, 0.1, "validation", "brain")
    assert sets.min_probability["normal"] is None and sets.always_included == ["normal"]
    assert sets.min_probability["malignant"] == np.sort(probs[labels == 1, 1])[0]  # 9th of 9
    assert sets.included(THREE, probs)[:, 2].all()
    assert "always in the set (fewer than 9 calibration images): normal" in sets.describe()
    content = json.loads(json.dumps(sets.to_json(THREE)))
    assert content["min_probability"]["normal"] is None
    assert content["always_included"] == ["normal"]


def test_an_empty_group_gets_its_most_probable_state():
    sets = ConformalSets(0.1, "m", {"benign": 0.9, "malignant": 0.9, "normal": 0.9}, {})
    probs = np.array([[0.5, 0.3, 0.2], [0.05, 0.05, 0.9]])
    assert sets.included(THREE, probs).tolist() == [[True, False, False], [False, False, True]]
    states = {"Mass: present": 0.8, "Mass: absent": 0.8, "Nodule: present": 0.3,
              "Nodule: absent": 0.3}  # fmt: skip
    findings = ConformalSets(0.1, "m", states, {})
    included = findings.included(FINDINGS, np.array([[0.6, 0.5], [0.1, 0.9]]))
    assert included.tolist() == [[True, False, True, True], [False, True, True, False]]
    assert [FINDINGS.set_text(row) for row in included] == ["Mass|Nodule?", "Nodule"]
    assert FINDINGS.set_text(np.array([False, True, False, True])) == "(no finding)"
    assert THREE.set_text(np.array([True, False, True])) == "benign|normal"


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_0_1_is_one_line(alpha, capsys):
    with pytest.raises(MedftError, match=r"--conformal must be an alpha in \(0, 1\)"):
        CalibrateArguments(model=Path("m"), dataset="d", conformal=alpha)
    assert main(["calibrate", "--model", "m", "--dataset", "d", "--conformal", str(alpha)]) == 2
    assert "must be an alpha in (0, 1)" in capsys.readouterr().err


def test_a_recipe_alpha_outside_0_1_stops_before_training(brain_binary, tmp_path):
    with pytest.raises(MedftError, match=r"conformal must be an alpha in \(0, 1\)"):
        run_recipe("tiny_timm.yaml", brain_binary, tmp_path / "model", "--conformal", "1")


def test_sets_for_other_labels_are_refused(tmp_path):
    sets = fit_conformal(THREE, np.eye(3)[[0, 1, 2] * 10], np.array([0, 1, 2] * 10), 0.2, "v", None)
    sets.save(tmp_path, THREE)
    other = TaskInfo(["a", "b", "c"], multi_label=False)
    with pytest.raises(MedftError, match="holds conformal sets for benign, malignant, normal"):
        load_conformal(tmp_path, other)
    (tmp_path / CONFORMAL_NAME).write_text("{not json")
    with pytest.raises(MedftError, match="is not a conformal.json written by medft"):
        load_conformal(tmp_path, THREE)


def test_the_coverage_report_has_intervals_per_state_and_per_finding():
    rng = np.random.default_rng(4)
    probs, labels = multilabel_pool(rng, 800)
    sets = fit_conformal(FINDINGS, probs[:400], labels[:400], 0.2, "validation", "nih")
    scores = SplitScores(probs[400:], labels[400:])
    options = EvaluationOptions(bootstrap_resamples=200)
    content = conformal_coverage(sets, FINDINGS, scores, ("nih", "test"), options)
    overall = content["coverage"]
    assert overall["low"] <= overall["value"] <= overall["high"] and overall["value"] > 0.75
    assert set(content["per_state"]) == {"Mass: present", "Mass: absent", "Nodule: present",
                                         "Nodule: absent"}  # fmt: skip
    assert content["per_state"]["Nodule: present"]["images"] == labels[400:, 1].sum()
    assert set(content["per_finding"]) == {"Mass", "Nodule"}
    assert not content["on_calibration_sample"]
    again = conformal_coverage(sets, FINDINGS, scores, ("nih", "validation"), options)
    assert again["on_calibration_sample"]


# end to end --------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_calibrate_fits_sets_that_predict_evaluate_serve_and_export_carry(
    trained_binary, brain_binary, brain_raw, tmp_path, capsys
):
    model = tmp_path / "site_model"
    code = main(["calibrate", "--model", str(trained_binary), "--dataset", str(brain_binary),
                 "--output", str(model), "--conformal", "0.2", "--bootstrap-resamples", "50",
                 "--num-workers", "0"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Conformal prediction sets (alpha 0.2, target coverage 80%" in printed
    assert "conformal prediction sets fitted on this sample at alpha 0.2" in printed
    content = json.loads((model / CONFORMAL_NAME).read_text())
    assert content["alpha"] == 0.2 and content["calibration"]["split"] == "validation"
    assert set(content["min_probability"]) == {"normal", "tumor"}
    assert str(tmp_path) not in json.dumps(content)  # names, no paths
    report = json.loads((model / "metrics.json").read_text())
    assert report["split"] == "test" and not report["conformal"]["on_calibration_sample"]
    assert set(report["conformal"]["per_state"]) == {"normal", "tumor"}
    assert 1 <= report["conformal"]["mean_set_size"]["value"] <= 2
    assert "Conformal prediction sets" in (model / "README.md").read_text()

    output = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(model), str(brain_binary), "--output", str(output),
                 "--num-workers", "0"]) == 0  # fmt: skip
    assert f"{PREDICTION_SET} column: conformal sets, 80% coverage" in capsys.readouterr().out
    rows = read_rows(output)
    assert rows and all(row[PREDICTION_SET] for row in rows)
    assert {row[PREDICTION_SET] for row in rows} <= {"normal", "tumor", "normal|tumor"}
    cut = content["min_probability"]
    for row in rows:  # each class whose probability reaches its cut, else the top class
        probs = {row[f"label_{i}"]: float(row[f"score_{i}"]) for i in (1, 2)}
        reached = [c for c in ("normal", "tumor") if cut[c] is None or probs[c] >= cut[c]]
        assert row[PREDICTION_SET] == "|".join(reached or [row["label_1"]])

    # evaluated on the calibration split itself: said, and not taken for a test
    assert main(["evaluate", "--model", str(model), "--dataset", str(brain_binary), "--split",
                 "validation", "--output", str(tmp_path / "on-validation"),
                 "--bootstrap-resamples", "0", "--num-workers", "0"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "measured on the split the sets were fitted on: not a test" in printed
    assert "WARNING: the validation split of brain2 is a local sample site_model was" in printed

    served = load_served_model(model)
    scans = sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[:2]
    text, _, _ = answer(served)([str(path) for path in scans], False)
    assert text.replace("\\", "").count("Prediction set (80% coverage): ") == 2

    exported = tmp_path / "onnx" / "model.onnx"
    assert main(["export", "--model", str(model), "--output", str(exported)]) == 0
    settings = json.loads((exported.parent / "preprocessor.json").read_text())
    assert settings["conformal"] == content
    onnx_output = tmp_path / "onnx.csv"
    assert main(["predict", "--model", str(exported), str(brain_binary), "--output",
                 str(onnx_output), "--num-workers", "0"]) == 0  # fmt: skip
    onnx_sets = [row[PREDICTION_SET] for row in read_rows(onnx_output)]
    assert onnx_sets == [row[PREDICTION_SET] for row in rows]


def test_a_multilabel_model_writes_each_findings_states(trained_multilabel, nih_prepared, tmp_path):
    model = tmp_path / "findings"
    assert main(["calibrate", "--model", str(trained_multilabel), "--dataset", str(nih_prepared),
                 "--output", str(model), "--conformal", "0.3", "--bootstrap-resamples", "20",
                 "--num-workers", "0"]) == 0  # fmt: skip
    report = json.loads((model / "metrics.json").read_text())["conformal"]
    names = saved_task(model).label_names
    assert set(report["per_finding"]) == set(names)
    assert len(report["per_state"]) == 2 * len(names)
    assert 1 <= report["mean_set_size"]["value"] <= 2
    output = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(model), str(nih_prepared), "--output", str(output),
                 "--num-workers", "0"]) == 0  # fmt: skip
    for row in read_rows(output):
        shown = row[PREDICTION_SET]
        assert shown == "(no finding)" or {t.rstrip("?") for t in shown.split("|")} <= set(names)


def test_a_recalibrated_model_refits_the_sets_it_had(trained_binary, brain_binary, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_binary, model, ignore=shutil.ignore_patterns("checkpoint-*"))
    sets = fit_conformal(THREE, np.eye(3)[[0, 1, 2] * 10], np.array([0, 1, 2] * 10), 0.3, "v", None)
    (model / CONFORMAL_NAME).write_text(json.dumps(sets.to_json(THREE)))  # another model's
    assert main(["calibrate", "--model", str(model), "--dataset", str(brain_binary),
                 "--bootstrap-resamples", "0", "--num-workers", "0"]) == 2  # fmt: skip
    sets = fit_conformal(
        TaskInfo(["normal", "tumor"], False), np.eye(2)[[0, 1] * 10], np.array([0, 1] * 10),
        0.3, "v", None,
    )  # fmt: skip
    sets.save(model, TaskInfo(["normal", "tumor"], False))
    assert main(["calibrate", "--model", str(model), "--dataset", str(brain_binary),
                 "--bootstrap-resamples", "0", "--num-workers", "0"]) == 0  # fmt: skip
    content = json.loads((model / CONFORMAL_NAME).read_text())
    assert content["alpha"] == 0.3 and content["calibration"]["split"] == "validation"


def test_a_recipe_fits_sets_on_the_validation_split(brain_binary, tmp_path):
    output = tmp_path / "model"
    run_recipe("tiny_timm.yaml", brain_binary, output, "--conformal", "0.2")
    content = json.loads((output / CONFORMAL_NAME).read_text())
    assert content["calibration"]["split"] == "validation" and content["alpha"] == 0.2
    report = json.loads((output / "metrics.json").read_text())
    assert report["split"] == "test" and report["conformal"]["target"] == 0.8
    card = (output / "README.md").read_text()
    assert "Conformal prediction sets (alpha 0.2" in card and "| conformal | 0.2 |" in card
