"""Performance by subgroup (medft.subgroups): groups, gaps, intervals, small groups."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medft.errors import MedftError
from medft.subgroups import MISSING, evaluate_subgroups
from medft.tasks import TaskInfo

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
    result = evaluate_subgroups(BINARY, probs, labels, None, {"sex": sex}, np.array([0.5]),
                                resamples=400, seed=3)[0]  # fmt: skip
    female, male = result.groups
    assert (female.value, male.value) == ("F", "M")
    for group in (female, male):
        inside = sex == group.value
        assert group.metrics["auroc"] == pytest.approx(roc_auc_score(labels[inside],
                                                                     probs[inside, 1]))  # fmt: skip
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
    by_image = evaluate_subgroups(BINARY, probs, labels, None, {"sex": sex}, np.array([0.5]),
                                  resamples=300)[0]  # fmt: skip
    by_patient = evaluate_subgroups(BINARY, probs, labels, patients, {"sex": sex},
                                    np.array([0.5]), resamples=300)[0]  # fmt: skip
    auroc = {"image": by_image.groups[1].intervals, "patient": by_patient.groups[1].intervals}
    width = {unit: found["auroc"]["high"] - found["auroc"]["low"] for unit, found in auroc.items()}
    assert width["patient"] > 1.5 * width["image"]  # copies of a patient are not independent
    assert by_patient.groups[0].patients == 15


def test_small_groups_and_missing_values_are_shown_and_marked():
    probs, labels, sex = known_gap(per_group=100)
    age = np.array(["18-39"] * 100 + ["40-59"] * 90 + ["80+"] * 8 + [None] * 2, dtype=object)
    labels[190:198] = 0  # the 80+ group has no positive
    result = evaluate_subgroups(BINARY, probs, labels, None, {"age_band": age}, np.array([0.5]),
                                resamples=50)[0]  # fmt: skip
    values = [group.value for group in result.groups]
    assert values == ["18-39", "40-59", "80+", MISSING]
    oldest = result.groups[2]
    assert oldest.too_small and oldest.positives == {"tumor": 0} and oldest.images == 8
    assert "auroc" not in oldest.metrics  # undefined without positives, not a crash
    assert result.groups[3].images == 2 and result.groups[3].too_small
    assert result.worst_sensitivity["tumor"]["group"] in ("18-39", "40-59")


def test_multilabel_groups_have_each_findings_sensitivity():
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 2)) < 0.3).astype(np.float32)
    view = np.array(["PA", "AP"] * 200, dtype=object)
    noise = np.where(view[:, None] == "PA", 0.5, 2.0)
    probs = 1 / (1 + np.exp(-(3 * labels - 1.5 + rng.normal(size=labels.shape) * noise)))
    result = evaluate_subgroups(FINDINGS, probs, labels, None, {"view_position": view},
                                np.array([0.5, 0.5]), resamples=100)[0]  # fmt: skip
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
    result = evaluate_subgroups(FINDINGS, probs, labels, None, {"view_position": view},
                                np.array([0.5, 0.5]), resamples=50)[0]  # fmt: skip
    for group in result.groups:
        assert not group.too_small and group.few_positives == ["Nodule"]
        assert "fewer than 5 positives of Nodule" in group.caveat()
    assert result.worst_sensitivity["Mass"]["group"] == "AP"
    assert "Nodule" not in result.worst_sensitivity  # no group has enough Nodule positives


def test_an_attribute_of_many_values_is_refused_naming_it():
    probs, labels, _ = known_gap(per_group=50)
    age = np.arange(len(labels)) % 60
    with pytest.raises(MedftError, match="'age' has 60 distinct values.*age_band"):
        evaluate_subgroups(BINARY, probs, labels, None, {"age": age}, np.array([0.5]),
                           resamples=10)  # fmt: skip
