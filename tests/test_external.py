"""External-site validation: the own test scores kept with a model, a site's evaluation set
against them (differences with bootstrap intervals, calibration, prevalence), and --label-map."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value, load_from_disk

from medft.cli import main
from medft.config import EvaluationOptions
from medft.errors import MedftError
from medft.evaluation.external import (
    AGAINST_OWN_NAME,
    TEST_SCORES_NAME,
    SplitRecord,
    against_own_test,
    compare,
    group_numbers,
    keep_if_own_test,
)
from medft.evaluation.local_fit import fitting_history
from medft.evaluation.thresholds import cutoffs, fixed_thresholds
from medft.inference.label_map import LabelMap, read_label_map
from medft.tasks import TaskInfo
from tests.helpers import FINDINGS, THREE, run_recipe
from tests.shifts import Acquisition, scans_dataset, without_labels

BINARY = TaskInfo(["normal", "tumor"], multi_label=False)
OPTIONS = EvaluationOptions(bootstrap_resamples=300)
SHIFTED = Acquisition(contrast=0.35, noise=70.0, resolution=0.4)
SECTION = "Against the model's own test split"


def record(probs, labels, patients=None, task=BINARY, split="test", dataset="site") -> SplitRecord:
    scores = type("Scores", (), {"probs": probs, "labels": labels, "patients": patients})
    return SplitRecord.of(scores, task, split, dataset, f"{dataset}-{split}")


def binary_scores(rng, images: int, separation: float, prevalence: float = 0.5):
    """Positive-class scores that separate the classes by ``separation`` (in noise sds)."""
    labels = (np.arange(images) < prevalence * images).astype(int)
    positive = 1 / (1 + np.exp(-(separation * (labels - 0.5) + rng.normal(0, 1, images))))
    return np.stack([1 - positive, positive], axis=1), labels


# the comparison, on scores with a known shift --------------------------------------------------


def test_a_known_drop_shows_with_an_interval_below_zero_and_the_prevalence_of_each_side():
    rng = np.random.default_rng(0)
    own = record(*binary_scores(rng, 400, 4.0), patients=np.repeat(np.arange(200), 2).astype(str))
    local = record(*binary_scores(rng, 300, 1.0, prevalence=0.2))
    cut = cutoffs(BINARY, fixed_thresholds(BINARY, 0.5, "given"))
    section = compare(BINARY, own, local, cut, OPTIONS)

    auroc = section["metrics"]["auroc"]
    assert auroc["own"] > 0.95 and auroc["local"] < 0.85
    assert auroc["difference"] == pytest.approx(auroc["local"] - auroc["own"])
    assert auroc["interval"]["low"] < auroc["difference"] < auroc["interval"]["high"] < 0
    assert list(section["metrics"]) == list(BINARY.headline)
    assert section["prevalence"]["tumor"] == {"own": 0.5, "local": pytest.approx(0.2)}
    assert section["bootstrap"]["units"] == {"own": "patient", "local": "image"}
    assert section["own"] == {"split": "test", "dataset": "site", "images": 400, "patients": 200}
    assert section["calibration"]["own_ece"] >= 0 and section["calibration"]["local_ece"] >= 0
    assert section["flagged_out_of_distribution"] is None  # no scores carry flags yet


@pytest.mark.parametrize("task", [BINARY, THREE], ids=["binary", "multiclass"])
def test_the_same_scores_on_both_sides_differ_by_nothing(task):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(len(task.label_names)), 200)
    labels = np.array([rng.choice(len(row), p=row) for row in probs])
    own = record(probs, labels, task=task)
    section = compare(task, own, own, None, OPTIONS)
    assert list(section["metrics"]) == list(task.headline)
    for row in section["metrics"].values():
        assert row["difference"] == 0
        assert row["interval"]["low"] <= 0 <= row["interval"]["high"]


def test_scores_of_an_ensemble_or_test_time_views_are_not_compared_with_one_model_s(tmp_path):
    rng = np.random.default_rng(3)
    record(*binary_scores(rng, 20, 2.0), dataset="own").save(tmp_path)
    site = DatasetDict({"test": Dataset.from_dict({"label": [0, 1]})})
    local = record(*binary_scores(rng, 20, 2.0))
    section = against_own_test(tmp_path, local, site, BINARY, None, OPTIONS, False)
    assert "ensemble's or averaged over test-time views" in section["left_out"]
    assert keep_if_own_test(tmp_path, local, True) is None  # another split: the kept file stays
    assert SplitRecord.read(tmp_path).dataset == "own"


def test_a_multilabel_comparison_has_the_headline_and_each_finding_s_prevalence():
    rng = np.random.default_rng(2)
    labels = (rng.random((300, 2)) < [0.3, 0.1]).astype(np.float32)
    sharp = 1 / (1 + np.exp(-(4 * (labels - 0.5) + rng.normal(0, 1, labels.shape))))
    blurred = 1 / (1 + np.exp(-(0.5 * (labels - 0.5) + rng.normal(0, 1, labels.shape))))
    own, local = record(sharp, labels, task=FINDINGS), record(blurred, labels, task=FINDINGS)
    section = compare(FINDINGS, own, local, np.array([0.5, 0.5]), OPTIONS)
    assert list(section["metrics"]) == list(FINDINGS.headline)
    assert section["metrics"]["mean_auroc"]["interval"]["high"] < 0
    assert section["prevalence"]["Mass"]["own"] == pytest.approx(labels[:, 0].mean())


def test_patients_are_numbered_by_first_appearance_and_their_ids_are_not_kept(tmp_path):
    keys = np.array(["patient MRN-9", "patient MRN-2", "patient MRN-9", "image x"], dtype=object)
    assert group_numbers(keys).tolist() == [0, 1, 0, 2]
    kept = record(np.full((4, 2), 0.5), np.array([0, 1, 0, 1]), patients=keys)
    path = kept.save(tmp_path)
    assert path.name == TEST_SCORES_NAME and b"MRN" not in path.read_bytes()
    again = SplitRecord.read(tmp_path)
    assert again.patients.tolist() == [0, 1, 0, 2] and again.label_names == ["normal", "tumor"]
    assert (again.split, again.dataset, again.images) == ("test", "site", 4)


def test_a_damaged_own_test_file_is_one_line_saying_what_to_do(tmp_path):
    (tmp_path / TEST_SCORES_NAME).write_bytes(b"\x10\x00")
    with pytest.raises(MedftError, match="cannot be read .*remove it"):
        SplitRecord.read(tmp_path)


# --label-map, on a dataset in memory ---------------------------------------------------------


def labelled(names: list[str], values: list, multi_label: bool = False) -> DatasetDict:
    feature = List(ClassLabel(names=names)) if multi_label else ClassLabel(names=names)
    column = "labels" if multi_label else "label"
    features = Features({"image_id": Value("string"), column: feature})
    content = {"image_id": [f"scan {row}" for row in range(len(values))], column: values}
    rows = Dataset.from_dict(content, features=features)
    return DatasetDict({"test": rows})


def label_map(tmp_path: Path, text: str) -> LabelMap:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    return read_label_map(path)


TUMOURS = ["glioma", "meningioma", "notumor", "pituitary", "unclear"]
TUMOUR_MAP = """map:
  glioma: tumor
  meningioma: tumor
  pituitary: tumor
  notumor: normal
drop: [unclear]
"""


def test_a_four_class_dataset_is_read_as_tumour_vs_normal_leaving_out_dropped_images(tmp_path):
    mapping = label_map(tmp_path, TUMOUR_MAP)
    dataset = labelled(TUMOURS, [0, 1, 2, 3, 4, 4, 2])
    source = TaskInfo.from_features(dataset["test"].features, "image", "label")
    mapped, task = mapping.apply(dataset, source, BINARY, "site")
    assert task.same_labels(BINARY)
    assert mapped["test"]["label"] == [1, 1, 0, 1, 0]
    assert mapped["test"].features["label"].names == ["normal", "tumor"]
    assert mapping.summary("test", task)["images_left_out"] == 2


def test_several_findings_map_onto_one_as_their_union_and_dropped_ones_are_not_scored(
    tmp_path,
):
    mapping = label_map(tmp_path, "map: {Mass: Mass, Tumour: Mass, Nodule: Nodule}\ndrop: [Scar]")
    names = ["Mass", "Nodule", "Scar", "Tumour"]
    dataset = labelled(names, [[0, 3], [2], [1, 2], []], multi_label=True)
    source = TaskInfo.from_features(dataset["test"].features, "image", "labels")
    mapped, task = mapping.apply(dataset, source, FINDINGS, "site")
    assert mapped["test"]["labels"] == [[0], [], [1], []]  # every image stays
    assert mapping.summary("test", task)["images_left_out"] == 0


@pytest.mark.parametrize(
    "text,message",
    [
        (TUMOUR_MAP.replace("glioma", "gliomaa"), "'gliomaa' is not a label of site"),
        (TUMOUR_MAP.replace("notumor: normal", "notumor: healthy"),
         "'notumor' maps to 'healthy', which is not a label of the model"),
        (TUMOUR_MAP.replace("drop: [unclear]", ""), "site's label 'unclear' is not mapped"),
        (TUMOUR_MAP.replace("notumor: normal", "notumor: tumor"),
         "no label of site is mapped onto the model's label 'normal'"),
        (TUMOUR_MAP.replace("[unclear]", "[unclear, glioma]"), "'glioma' is both mapped and"),
        ("glioma: tumor\n", "must hold map: .* found glioma"),
        ("map: [glioma, tumor]\n", "map: must give one model label per dataset label"),
        ("map: {a: b}\ndrop: unclear\n", "drop: must be a list"),
        ("map: {a: [b\n", "is not valid YAML"),
    ],
    ids=["unknown dataset label", "unknown model label", "unmapped label", "model label unmet",
         "mapped and dropped", "no map key", "map not a mapping", "drop not a list", "bad YAML"],
)  # fmt: skip
def test_each_bad_label_map_is_one_line_naming_the_problem(tmp_path, text, message):
    dataset = labelled(TUMOURS, [0, 1, 2, 3, 4])
    source = TaskInfo.from_features(dataset["test"].features, "image", "label")
    with pytest.raises(MedftError, match=message) as raised:
        label_map(tmp_path, text).apply(dataset, source, BINARY, "site")
    assert "\n" not in str(raised.value) and "--label-map" in str(raised.value)


def test_a_map_cannot_turn_one_label_per_image_into_several(tmp_path):
    mapping = label_map(tmp_path, "map: {a: Mass, b: Nodule}")
    dataset = labelled(["a", "b"], [0, 1])
    source = TaskInfo.from_features(dataset["test"].features, "image", "label")
    with pytest.raises(MedftError, match="holds binary labels and the model predicts multilabel"):
        mapping.apply(dataset, source, FINDINGS, "site")


def test_a_map_that_drops_every_image_of_a_split_says_so(tmp_path):
    mapping = label_map(tmp_path, TUMOUR_MAP)
    dataset = labelled(TUMOURS, [4, 4])
    source = TaskInfo.from_features(dataset["test"].features, "image", "label")
    with pytest.raises(MedftError, match="drops every image of the test split of site"):
        mapping.apply(dataset, source, BINARY, "site")


# through training and medft evaluate ----------------------------------------------------------


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Path:
    """The training site's data: two balanced classes, two images per patient."""
    folder = tmp_path_factory.mktemp("site_a") / "own"
    return scans_dataset(folder, {"train": 120, "validation": 40, "test": 40})


@pytest.fixture(scope="module")
def model(own, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("trained") / "stripes"
    run_recipe("tiny_timm.yaml", own, output, "--num_train_epochs", "4",
               "--train_metrics_samples", "0", "--bootstrap_resamples", "0")  # fmt: skip
    return output


@pytest.fixture(scope="module")
def shifted_site(tmp_path_factory) -> Path:
    """Another site: less contrast, more noise, a lower resolution, a fifth positive."""
    folder = tmp_path_factory.mktemp("site_b") / "shifted"
    return scans_dataset(folder, {"test": 60}, shares=(0.8, 0.2), acquisition=SHIFTED, seed=1)


def evaluate(*arguments: str) -> int:
    return main(["evaluate", "--num-workers", "0", "--bootstrap-resamples", "300", *arguments])


def test_training_keeps_the_test_split_s_scores_and_no_path(model, own):
    kept = SplitRecord.read(model)
    test = load_from_disk(str(own))["test"]
    assert (kept.split, kept.images, kept.dataset) == ("test", 40, "own")
    assert kept.fingerprint == test._fingerprint
    assert sorted(set(kept.patients.tolist())) == list(range(20))
    assert kept.probs.shape == (40, 2) and kept.labels.tolist() == test["label"]
    content = (model / TEST_SCORES_NAME).read_bytes()
    assert str(own).encode() not in content and b"test-patient-" not in content


def test_a_shifted_site_shows_the_drop_with_intervals(model, shifted_site, tmp_path, capsys):
    assert evaluate("--model", str(model), "--dataset", str(shifted_site),
                    "--output", str(tmp_path)) == 0  # fmt: skip
    printed = capsys.readouterr().out
    section = json.loads((tmp_path / "metrics.json").read_text())["against_own_test"]
    auroc = section["metrics"]["auroc"]
    assert auroc["own"] > 0.9, auroc  # the model learnt the training site's stripes ...
    assert auroc["interval"]["high"] < 0, auroc  # ... and the site's loses them
    assert section["prevalence"]["down"] == {"own": 0.5, "local": pytest.approx(0.2)}
    assert section["bootstrap"]["units"] == {"own": "patient", "local": "patient"}
    assert section["own"]["dataset"] == "own" and section["local"]["dataset"] == "shifted"
    assert (tmp_path / AGAINST_OWN_NAME).is_file()
    lines = printed.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(SECTION)))
    assert lines[start + 1].split()[:4] == ["metric", "own", "local", "local-own"]
    assert lines[start + 2].split()[0] == "auroc"
    assert f"{auroc['difference']:+.4f}" in lines[start + 2]
    assert any(line.split()[0] == "ECE" for line in lines[start:])


def test_the_model_s_own_dataset_gets_no_section_and_its_test_scores_follow_the_model(
    model, own, tmp_path, capsys
):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    kept = folder / TEST_SCORES_NAME
    before = kept.stat().st_mtime_ns
    assert evaluate("--model", str(folder), "--dataset", str(own), "--split", "validation") == 0
    assert kept.stat().st_mtime_ns == before  # the validation split is not the own test split
    assert evaluate("--model", str(folder), "--dataset", str(own)) == 0
    assert kept.stat().st_mtime_ns > before
    assert SECTION not in capsys.readouterr().out
    assert "against_own_test" not in json.loads((folder / "metrics.json").read_text())


def test_a_model_without_own_test_scores_is_evaluated_with_a_one_line_note(
    model, shifted_site, tmp_path, capsys
):
    folder = tmp_path / "older"
    shutil.copytree(model, folder, ignore=shutil.ignore_patterns(TEST_SCORES_NAME))
    assert evaluate("--model", str(folder), "--dataset", str(shifted_site)) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith(SECTION)]
    assert notes == [
        f"{SECTION}: left out (the model folder holds no {TEST_SCORES_NAME}: it was trained "
        "without a test split, or by a medft that did not keep them)."
    ]


def test_a_label_map_reads_a_four_class_site_as_the_model_s_labels(model, tmp_path, capsys):
    classes = ("across fine", "across coarse", "blank", "down fine", "down coarse")
    site = scans_dataset(tmp_path / "four", {"test": 50}, classes=classes, seed=2)
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "map:\n  across fine: across\n  across coarse: across\n  down fine: down\n"
        "  down coarse: down\ndrop: [blank]\n"
    )
    assert evaluate("--model", str(model), "--dataset", str(site), "--label-map", str(mapping),
                    "--output", str(tmp_path / "out")) == 0  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["images"] == 40 and report["label_map"]["images_left_out"] == 10
    assert report["label_map"]["drop"] == ["blank"]
    assert (
        "labels mapped: across fine, across coarse -> across; down fine, down coarse -> down; "
        "dropped: blank (images of a dropped label are left out: 10 here)"
    ) in printed
    section = report["against_own_test"]
    assert section["prevalence"]["across"] == {"own": 0.5, "local": 0.5}
    assert section["metrics"]["auroc"]["local"] > 0.8  # the same acquisition: no drop to speak of


def test_a_site_without_the_labels_or_with_other_ones_is_one_line(
    model, shifted_site, tmp_path, capsys
):
    unlabelled = without_labels(shifted_site, tmp_path / "unlabelled")
    other = scans_dataset(tmp_path / "other", {"test": 8}, classes=("across fine", "down fine"))
    capsys.readouterr()
    assert evaluate("--model", str(model), "--dataset", str(unlabelled)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "found no label column" in error[0]
    assert evaluate("--model", str(model), "--dataset", str(other)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "map the dataset's labels onto the model's" in error[0]
    mapping = tmp_path / "map.yaml"
    mapping.write_text("map: {across fine: across, down fine: down, down wide: down}\n")
    assert evaluate("--model", str(model), "--dataset", str(other), "--label-map",
                    str(mapping)) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"medft: error: --label-map {mapping}: 'down wide' is not a label of {other} (its "
        "labels: across fine, down fine)."
    ]


def test_the_section_sets_the_site_s_out_of_distribution_flags_beside_the_own_test_split_s(
    model, shifted_site, tmp_path
):
    assert evaluate("--model", str(model), "--dataset", str(shifted_site),
                    "--output", str(tmp_path)) == 0  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text())
    flagged = report["against_own_test"]["flagged_out_of_distribution"]
    assert flagged["own"] == pytest.approx(SplitRecord.read(model).flagged.mean())
    assert flagged["local"] == pytest.approx(report["ood"]["rate"])


def test_calibrate_at_a_site_labelled_otherwise_reads_it_through_the_label_map(model, tmp_path):
    classes = ("across fine", "across coarse", "blank", "down fine", "down coarse")
    site = scans_dataset(tmp_path / "four", {"fit": 50, "test": 50}, classes=classes, seed=3)
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "map:\n  across fine: across\n  across coarse: across\n  down fine: down\n"
        "  down coarse: down\ndrop: [blank]\n"
    )
    output = tmp_path / "at-site"
    assert main(["calibrate", "--model", str(model), "--dataset", str(site), "--num-workers",
                 "0", "--tune-split", "fit", "--split", "test", "--label-map", str(mapping),
                 "--output", str(output), "--bootstrap-resamples", "0"]) == 0  # fmt: skip
    report = json.loads((output / "metrics.json").read_text())
    assert report["images"] == 40 and report["label_map"]["images_left_out"] == 10
    assert fitting_history(output)[-1].images == 40  # the fitting sample, dropped images out
