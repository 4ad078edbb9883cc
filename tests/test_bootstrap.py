"""Bootstrap intervals: seeded, narrower with more data, patients resampled whole."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from medft.evaluation.bootstrap import Resampler, bootstrap_intervals


def accuracy_of(correct: np.ndarray):
    return lambda indices: {
        "accuracy": float(accuracy_score(np.ones_like(indices), correct[indices]))
    }


def width(interval) -> float:
    return interval.high - interval.low


def test_intervals_are_reproducible_for_a_seed_and_change_with_it():
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 3)
    statistic, resampler = accuracy_of(correct), Resampler(len(correct))
    first = bootstrap_intervals(statistic, resampler, resamples=300, seed=7)
    again = bootstrap_intervals(statistic, resampler, resamples=300, seed=7)
    other = bootstrap_intervals(statistic, resampler, resamples=300, seed=8)
    assert first == again
    assert first != other
    interval = first["accuracy"]
    assert interval.low < 0.7 < interval.high  # the point estimate, 21 of 30
    assert interval.resamples_used == 300


def test_intervals_are_wider_with_fewer_samples():
    pattern = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    few, many = pattern.repeat(2), pattern.repeat(20)  # 20 and 200 images, both 70% right
    narrow = bootstrap_intervals(accuracy_of(many), Resampler(len(many)), resamples=400)
    wide = bootstrap_intervals(accuracy_of(few), Resampler(len(few)), resamples=400)
    assert width(wide["accuracy"]) > 2 * width(narrow["accuracy"])  # ~ sqrt(10) x wider


def test_patients_are_drawn_whole_with_all_their_images():
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    resampler = Resampler(len(patients), patients)
    assert (resampler.n_units, resampler.unit) == (3, "patient")
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(50):
        drawn = np.bincount(resampler.draw(rng), minlength=6)
        assert drawn[0] == drawn[1] == drawn[2] and drawn[4] == drawn[5]  # whole patients
        assert drawn[0] + drawn[3] + drawn[4] == 3  # three patients drawn, with replacement
        sizes.add(int(drawn.sum()))
    assert sizes > {6}  # the number of images varies with the patients drawn


def test_patient_resampling_widens_intervals_of_correlated_images():
    # 10 patients with 6 images each; a patient's images are all right or all wrong.
    correct = np.repeat([1, 1, 1, 0, 1, 0, 1, 1, 0, 1], 6)
    patients = np.repeat(np.arange(10), 6)
    by_image = bootstrap_intervals(accuracy_of(correct), Resampler(60), resamples=400)
    by_patient = bootstrap_intervals(accuracy_of(correct), Resampler(60, patients), resamples=400)
    assert width(by_patient["accuracy"]) > 1.8 * width(by_image["accuracy"])  # ~ sqrt(6) x


def test_resamples_where_a_metric_is_undefined_are_skipped_and_counted():
    targets = np.array([1] + [0] * 9)  # one positive: often not drawn at all
    scores = np.linspace(0.9, 0.0, 10)

    def auroc(indices):
        drawn = targets[indices]
        if len(np.unique(drawn)) < 2:
            return {"auroc": float("nan")}
        return {"auroc": float(roc_auc_score(drawn, scores[indices]))}

    interval = bootstrap_intervals(auroc, Resampler(10), resamples=500, seed=0)["auroc"]
    # P(the positive is never drawn) = 0.9^10 = 0.35, so about 325 of 500 count
    assert 280 < interval.resamples_used < 370
    assert interval.low == pytest.approx(1.0) and interval.high == pytest.approx(1.0)


def test_a_metric_never_defined_has_no_interval():
    intervals = bootstrap_intervals(lambda _: {"x": float("nan")}, Resampler(5), resamples=20)
    assert intervals == {"x": None}
