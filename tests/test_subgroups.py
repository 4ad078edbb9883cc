"""Performance by subgroup (medft.evaluation.subgroups): groups, gaps, intervals, small
groups; and through medft evaluate, the end of training, the model card, medft predict and
medft cv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from datasets import DatasetDict, load_from_disk
from sklearn.metrics import roc_auc_score

from medft.cli import main
from medft.commands.cv import cross_validate
from medft.commands.predict import predict
from medft.config.commands import CvArguments
from medft.config.evaluation import EvaluateArguments
from medft.config.inference import PredictArguments
from medft.errors import MedftError
from medft.evaluation.evaluate import EvaluationReport
from medft.evaluation.saved_models import evaluate_model
from medft.evaluation.subgroups import MISSING, AttributeResult, evaluate_subgroups
from medft.formats.prepared_report import REPORT_NAME, read_report
from medft.parsing import parse_recipe
from medft.tasks import TaskInfo
from tests.helpers import FIXTURES, run_recipe

BINARY = TaskInfo(["normal", "tumor"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")


def known_gap(seed: int = 0, per_group: int = 300):
    """Binary scores where group 'F' is separated well (AUROC ~0.95) and 'M' poorly (~0.70)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=2 * per_group)
    sex = np.array(["F"] * per_group + ["M"] * per_group, dtype=object)
    separation = np.where(sex == "F", 2.3, 0.75)
    logit = labels * separation + rng.normal(size=len(labels))
    positive = 1 / (1 + np.exp(-(logit - separation / 2)))
    return np.stack([1 - positive, positive], axis=1), labels, sex


def test_group_metrics_and_the_gap_match_a_direct_bootstrap():
    probs, labels, sex = known_gap()
    result = evaluate_subgroups(
        BINARY, probs, labels, None, {"sex": sex}, np.array([0.5]), resamples=400, seed=3
    )[0]
    female, male = result.groups
    assert (female.value, male.value) == ("F", "M")
    for group in (female, male):
        inside = sex == group.value
        assert group.metrics["auroc"] == pytest.approx(
            roc_auc_score(labels[inside], probs[inside, 1])
        )
    expected_gap = female.metrics["auroc"] - male.metrics["auroc"]
    assert female.gaps["auroc"] == pytest.approx(expected_gap)
    assert male.gaps["auroc"] == pytest.approx(-expected_gap)

    rng = np.random.default_rng(11)
    direct = []
    for _ in range(2000):
        drawn = rng.integers(0, len(labels), len(labels))
        f, m = drawn[sex[drawn] == "F"], drawn[sex[drawn] == "M"]
        direct.append(roc_auc_score(labels[f], probs[f, 1]) - roc_auc_score(labels[m], probs[m, 1]))
    low, high = np.percentile(direct, [2.5, 97.5])
    interval = female.gap_intervals["auroc"]
    assert interval["low"] == pytest.approx(low, abs=0.02)
    assert interval["high"] == pytest.approx(high, abs=0.02)
    assert interval["low"] > 0.1  # the known gap is found, not noise
    assert not female.too_small and not male.too_small
    assert result.worst_sensitivity["tumor"]["group"] in ("F", "M")


def test_patients_are_resampled_with_all_their_images():
    probs, labels, sex = known_gap(per_group=60)
    patients = np.repeat(np.arange(len(labels) // 4), 4)  # four images a patient, alike
    probs, labels, sex = probs[patients * 4], labels[patients * 4], sex[patients * 4]
    by_image = evaluate_subgroups(
        BINARY, probs, labels, None, {"sex": sex}, np.array([0.5]), resamples=300
    )[0]
    by_patient = evaluate_subgroups(
        BINARY, probs, labels, patients, {"sex": sex}, np.array([0.5]), resamples=300
    )[0]
    auroc = {"image": by_image.groups[1].intervals, "patient": by_patient.groups[1].intervals}
    width = {unit: found["auroc"]["high"] - found["auroc"]["low"] for unit, found in auroc.items()}
    assert width["patient"] > 1.5 * width["image"]  # copies of a patient are not independent
    assert by_patient.groups[0].patients == 15


def test_small_groups_and_missing_values_are_shown_and_marked():
    probs, labels, sex = known_gap(per_group=100)
    age = np.array(["18-39"] * 100 + ["40-59"] * 90 + ["80+"] * 8 + [None] * 2, dtype=object)
    labels[190:198] = 0  # the 80+ group has no positive
    result = evaluate_subgroups(
        BINARY, probs, labels, None, {"age_band": age}, np.array([0.5]), resamples=50
    )[0]
    values = [group.value for group in result.groups]
    assert values == ["18-39", "40-59", "80+", MISSING]
    oldest = result.groups[2]
    assert oldest.too_small and oldest.positives == {"tumor": 0} and oldest.images == 8
    assert "auroc" not in oldest.metrics  # undefined without positives, not a crash
    assert result.groups[3].images == 2 and result.groups[3].too_small
    assert result.worst_sensitivity["tumor"]["group"] in ("18-39", "40-59")


def test_a_group_of_one_class_has_its_undefined_rates_left_out_and_says_why():
    probs, labels, _ = known_gap(per_group=100)
    site = np.where(labels == 1, "A", "B").astype(object)
    site[:40] = "B"  # B holds both classes, A positives only
    result = evaluate_subgroups(
        BINARY, probs, labels, None, {"site": site}, np.array([0.5]), resamples=50
    )[0]
    positives_only = result.groups[0]
    assert positives_only.value == "A" and not positives_only.too_small
    assert {"auroc", "specificity"}.isdisjoint(positives_only.metrics)
    assert positives_only.metrics["sensitivity"] == positives_only.metrics["sensitivity_tumor"]
    assert positives_only.caveat() == "no negatives of tumor"


def test_multilabel_groups_have_each_findings_sensitivity():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 2)) < 0.3).astype(np.float32)
    view = np.array(["PA", "AP"] * 200, dtype=object)
    noise = np.where(view[:, None] == "PA", 0.5, 2.0)
    probs = 1 / (1 + np.exp(-(3 * labels - 1.5 + rng.normal(size=labels.shape) * noise)))
    result = evaluate_subgroups(
        FINDINGS, probs, labels, None, {"view_position": view}, np.array([0.5, 0.5]), resamples=100
    )[0]
    pa = next(group for group in result.groups if group.value == "PA")
    assert {"mean_auroc", "auroc_Mass", "sensitivity_Mass", "sensitivity_Nodule"} <= set(pa.metrics)
    assert pa.positives["Mass"] == int(labels[view == "PA", 0].sum())
    assert result.worst_sensitivity["Mass"]["group"] == "AP"
    assert pa.gaps["mean_auroc"] > 0


def test_a_rare_finding_marks_its_own_cells_not_the_whole_group():
    rng = np.random.default_rng(2)
    labels = np.zeros((400, 2), dtype=np.float32)
    labels[:, 0] = rng.random(400) < 0.3  # Mass: common
    labels[[0, 1, 200, 201], 1] = 1  # Nodule: two positives a group
    view = np.array(["PA"] * 200 + ["AP"] * 200, dtype=object)
    noise = np.where(view[:, None] == "PA", 0.5, 2.0)
    probs = 1 / (1 + np.exp(-(3 * labels - 1.5 + rng.normal(size=labels.shape) * noise)))
    result = evaluate_subgroups(
        FINDINGS, probs, labels, None, {"view_position": view}, np.array([0.5, 0.5]), resamples=50
    )[0]
    for group in result.groups:
        assert not group.too_small and group.few_positives == ["Nodule"]
        assert "fewer than 5 positives of Nodule" in group.caveat()
    assert result.worst_sensitivity["Mass"]["group"] == "AP"
    assert "Nodule" not in result.worst_sensitivity  # no group has enough Nodule positives


def test_an_attribute_of_many_values_is_refused_naming_it():
    probs, labels, _ = known_gap(per_group=50)
    age = np.arange(len(labels)) % 60
    with pytest.raises(MedftError, match="'age' has 60 distinct values.*age_band"):
        evaluate_subgroups(BINARY, probs, labels, None, {"age": age}, np.array([0.5]), resamples=10)


# through medft evaluate, the end of training, the card, predict and cv -----------------------


def with_columns(source: Path, folder: Path, declared: list[str], **columns) -> Path:
    """A copy of a prepared dataset with these columns (each a function of a row's index and
    its other values; replacing one it has), whose prepare_report.json declares ``declared`` as
    its subgroup attributes."""
    dataset = load_from_disk(str(source))
    parts = {}
    for split, part in dataset.items():
        rows = list(part.remove_columns("image").with_format(None))
        for name, value_of in columns.items():
            values = [value_of(index, row) for index, row in enumerate(rows)]
            part = part.remove_columns([name] * (name in part.column_names))
            part = part.add_column(name, values)
        parts[split] = part
    DatasetDict(parts).save_to_disk(str(folder))
    report = read_report(source) | {"subgroup_columns": declared}
    (folder / REPORT_NAME).write_text(json.dumps(report))
    return folder


def age_band(index: int, row: dict) -> str | None:
    return None if row["age"] is None else "<50" if row["age"] < 50 else "50+"


def site(index: int, row: dict) -> str:
    """A, B, and C, which holds normal scans only."""
    return "C" if row["label"] == 0 and index % 2 else "AB"[index % 4 // 2]


@pytest.fixture(scope="module")
def nih_attributes(nih_prepared, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("attributes") / "cxr14"
    return with_columns(nih_prepared, folder, ["sex", "age_band"], age_band=age_band)


@pytest.fixture(scope="module")
def brain_sites(brain_binary, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("attributes") / "brain2"
    return with_columns(brain_binary, folder, [], site=site)


def test_evaluate_reports_the_declared_attributes_group_by_group(
    trained_multilabel, nih_attributes, tmp_path, capsys
):
    code = main(["evaluate", "--model", str(trained_multilabel), "--dataset",
                 str(nih_attributes), "--output", str(tmp_path), "--bootstrap-resamples",
                 "200"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    content = json.loads((tmp_path / "metrics.json").read_text())
    assert [attribute["attribute"] for attribute in content["subgroups"]] == ["sex", "age_band"]
    test = load_from_disk(str(nih_attributes))["test"].with_format(None)
    names = test.features["labels"].feature.names
    labels = np.array([[name in row for name in range(len(names))] for row in test["labels"]])
    report, scores = evaluate_model(
        EvaluateArguments(
            model=[trained_multilabel], dataset=str(nih_attributes), bootstrap_resamples=200
        )
    )
    cut = np.array([report.thresholds.values[name] for name in names])
    task = TaskInfo(names, True, label_column="labels")
    for attribute in content["subgroups"]:
        values = np.array(test[attribute["attribute"]])
        assert [group["value"] for group in attribute["groups"]] == sorted(set(values))
        for group in attribute["groups"]:
            inside = values == group["value"]
            assert group["images"] == inside.sum() and group["too_small"]  # 19 test images
            assert group["patients"] == len(set(np.array(test["patient_id"])[inside]))
            expected = {name: int(labels[inside, i].sum()) for i, name in enumerate(names)}
            assert group["positives"] == expected
            direct = task.headline_metrics(scores.probs[inside], scores.labels[inside], cut)
            assert group["metrics"]["micro_auroc"] == pytest.approx(direct["micro_auroc"])
            assert group["intervals"]["micro_auroc"]["resamples_used"] > 100
            assert "mean_auroc" in group["gaps"] and group["gap_intervals"]["mean_auroc"]
        assert (tmp_path / f"subgroups_{attribute['attribute']}.png").is_file()
        assert f"subgroups_{attribute['attribute']}.png" in content["files"]
    assert "Performance by subgroup" in printed and "age_band" in printed
    assert "subgroups_sex.png" in printed
    assert EvaluationReport.from_json(content).to_json() == content  # metrics.json round trip
    assert isinstance(EvaluationReport.from_json(content).subgroups[0], AttributeResult)


@pytest.mark.parametrize(
    "given, expected",
    [(["view_position"], ["view_position"]), (["sex,view_position"], ["sex", "view_position"]),
     (["sex", "--subgroups", "view_position"], ["sex", "view_position"]), (["none"], None)],
)  # fmt: skip
def test_subgroups_name_the_columns_or_none(
    given, expected, trained_multilabel, nih_attributes, tmp_path
):
    code = main(["evaluate", "--model", str(trained_multilabel), "--dataset",
                 str(nih_attributes), "--output", str(tmp_path), "--bootstrap-resamples", "20",
                 "--subgroups", *given])  # fmt: skip
    assert code == 0
    content = json.loads((tmp_path / "metrics.json").read_text())
    found = [attribute["attribute"] for attribute in content.get("subgroups", [])] or None
    assert found == expected
    assert bool(list(tmp_path.glob("subgroups_*.png"))) == bool(expected)


def test_an_ensemble_with_test_time_augmentation_reports_subgroups(
    trained_multilabel, nih_attributes, tmp_path
):
    code = main(["evaluate", "--model", str(trained_multilabel), "--model",
                 str(trained_multilabel), "--tta", "scales", "--dataset", str(nih_attributes),
                 "--output", str(tmp_path), "--bootstrap-resamples", "20"])  # fmt: skip
    assert code == 0
    report = EvaluationReport.from_json(json.loads((tmp_path / "metrics.json").read_text()))
    assert len(report.members) == 2 and len(report.tta) > 1
    assert [attribute.attribute for attribute in report.subgroups] == ["sex", "age_band"]
    assert sum(group.images for group in report.subgroups[0].groups) == report.images


def test_a_column_the_split_lacks_is_one_line_naming_it(trained_multilabel, nih_attributes, capsys):
    code = main(["evaluate", "--model", str(trained_multilabel), "--dataset",
                 str(nih_attributes), "--subgroups", "sex,site"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"--subgroups: the test split of {nih_attributes} has no column 'site'" in err[0]
    assert "its columns: image, labels, image_id, patient_id" in err[0]


def test_a_group_without_positives_is_shown_and_says_so(
    trained_binary, brain_sites, tmp_path, capsys
):
    code = main(["evaluate", "--model", str(trained_binary), "--dataset", str(brain_sites),
                 "--output", str(tmp_path), "--subgroups", "site", "--bootstrap-resamples",
                 "100"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    (attribute,) = EvaluationReport.from_json(
        json.loads((tmp_path / "metrics.json").read_text())
    ).subgroups
    only_normal = next(group for group in attribute.groups if group.value == "C")
    assert only_normal.positives == {"tumor": 0} and only_normal.too_small
    assert {"auroc", "sensitivity", "sensitivity_tumor"}.isdisjoint(only_normal.metrics)
    assert only_normal.intervals["sensitivity"] is None  # undefined, not 0, in every resample
    assert "no positives of tumor" in printed
    assert attribute.worst_sensitivity.get("tumor", {}).get("group") != "C"


def test_the_end_of_training_reports_the_recipe_subgroups_in_metrics_and_card(
    brain_sites, tmp_path
):
    output = tmp_path / "run"
    run_recipe("tiny_vit.yaml", brain_sites, output, "--subgroups", "site")
    content = json.loads((output / "metrics.json").read_text())
    (attribute,) = content["subgroups"]
    assert attribute["attribute"] == "site" and (output / "subgroups_site.png").is_file()
    card = (output / "README.md").read_text()
    assert "## Performance by subgroup" in card and "![By site](subgroups_site.png)" in card
    for group in attribute["groups"]:
        auroc, interval = group["metrics"].get("auroc"), group["intervals"].get("auroc")
        row = next(line for line in card.splitlines() if line.startswith(f"| {group['value']}"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == str(group["images"]) and cells[3] == str(group["positives"]["tumor"])
        if auroc is not None:
            shown = f"{auroc:.3f} ({interval['low']:.3f}-{interval['high']:.3f})"
            assert cells[4].startswith(shown)
        if group["too_small"]:
            assert "†" in cells[0]


def test_the_subgroups_recipe_key_reads_a_list_a_comma_list_or_none(brain_binary, tmp_path):
    common = {
        "model_name_or_path": "vit",
        "dataset_name": str(brain_binary),
        "output_dir": str(tmp_path),
    }
    for given, expected in (
        (["sex", "age_band"], ["sex", "age_band"]),
        ("sex,age_band", ["sex", "age_band"]),
        ("none", []),
        (None, None),
    ):
        assert parse_recipe(values={**common, "subgroups": given}).training.subgroups == expected
    with pytest.raises(MedftError, match="subgroups: none means no columns"):
        parse_recipe(values={**common, "subgroups": ["none", "sex"]})


def test_predict_copies_the_declared_or_named_columns_of_dataset_inputs(
    trained_multilabel, nih_attributes, nih_raw, tmp_path
):
    scan = sorted(nih_raw.glob("images_00*/images/*.png"))[0]
    output = tmp_path / "predictions.csv"
    predict(
        PredictArguments(
            model=[trained_multilabel],
            inputs=[scan, nih_attributes],
            output=output,
            num_workers=0,
            progress=False,
        )
    )
    with output.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header[-2:] == ["sex", "age_band"]
    test = load_from_disk(str(nih_attributes))["test"].with_format(None)
    assert rows[0][-2:] == ["", ""]  # a file has no attributes
    assert [row[-2:] for row in rows[1:]] == [list(v) for v in zip(test["sex"], test["age_band"])]
    predict(
        PredictArguments(
            model=[trained_multilabel],
            inputs=[nih_attributes],
            output=output,
            num_workers=0,
            progress=False,
            columns=["view_position", "age"],
        )
    )
    with output.open(newline="") as handle:
        header, first, *_ = list(csv.reader(handle))
    assert header[-2:] == ["view_position", "age"]
    assert first[-2:] == [test["view_position"][0], str(test["age"][0])]
    with pytest.raises(MedftError, match="--columns: the test split of .* has no column 'site'"):
        predict(
            PredictArguments(
                model=[trained_multilabel],
                inputs=[nih_attributes],
                output=output,
                columns=["site"],
                progress=False,
            )
        )


def test_the_cv_ensemble_reports_subgroups_on_the_test_split(brain_sites, tmp_path):
    overrides = ["--dataset_name", str(brain_sites), "--output_dir", str(tmp_path / "cv"),
                 "--subgroups", "site"]  # fmt: skip
    result = cross_validate(
        CvArguments(recipe=FIXTURES / "tiny_vit.yaml", overrides=overrides, folds=2)
    )
    (attribute,) = result.ensemble.subgroups
    test = load_from_disk(str(brain_sites))["test"]
    assert sum(group.images for group in attribute.groups) == len(test)
    assert (tmp_path / "cv" / "ensemble" / "subgroups_site.png").is_file()
