"""`medft evaluate` on saved models: a split scored by one model or an ensemble's mean
(over test-time views), thresholds tuned or read, and beside the report what the model
folder holds: its conformal sets' coverage, its out-of-distribution flags, whether the
split is a sample it was re-fitted on, and, on another site's data (read through a label
map), the comparison with its own test split (`medft.evaluation.external`), whose scores
it refreshes when it is evaluated on that split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import Dataset

from medft import public_names
from medft.config import EvaluateArguments
from medft.data.patients import patient_groups
from medft.evaluation.conformal import saved_sets_coverage
from medft.evaluation.evaluate import (
    EvaluationReport,
    SplitScores,
    evaluate_scores,
    subgroup_attributes,
)
from medft.evaluation.external import SplitRecord, against_own_test, keep_if_own_test
from medft.evaluation.local_fit import fitting_warnings
from medft.inference.classifier import Classifier, load_members, stored_thresholds
from medft.inference.inputs import labelled_dataset
from medft.inference.label_map import read_label_map
from medft.inference.ood import FeatureHook, ood_scorer
from medft.inference.scoring import score_split
from medft.inference.tta import ORIGINAL, View, tta_views
from medft.tasks import TaskInfo


def split_scores(
    members: Sequence[Classifier],
    dataset: Dataset,
    task: TaskInfo,
    batch_size: int,
    num_workers: int,
    views: Sequence[View] = (ORIGINAL,),
    attributes: dict[str, np.ndarray] | None = None,
    features: FeatureHook | None = None,
) -> tuple[SplitScores, dict[str, str]]:
    """Saved models' scores on one split (an ensemble's mean probabilities, over the
    test-time views), with its images' ``attributes`` (and ``features`` kept from the same
    passes); images that cannot be read are left out and returned as {image: reason}."""
    probs, errors = score_split(
        members,
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        views=views,
        features=features,
    )
    keep = np.array([row not in errors for row in range(len(dataset))], dtype=bool)
    labels = task.encode(list(dataset[task.label_column]))
    patients = patient_groups(dataset, task.image_column)
    ids = list(dataset["image_id"]) if "image_id" in dataset.column_names else None
    unreadable = {str(ids[row] if ids else row): reason for row, reason in errors.items()}
    scores = SplitScores(probs, labels, patients, attributes or {})
    return scores.subset(np.flatnonzero(keep)), unreadable


def evaluate_model(options: EvaluateArguments) -> tuple[EvaluationReport, SplitScores]:
    """`medft evaluate`: score ``split`` with a saved model (or the mean of several: an
    ensemble), over test-time views if asked, and tune thresholds on ``tune_split``
    (without one, the model folder's thresholds.json); performance by the ``subgroups``
    columns (default: the dataset's declared attributes; [] for none); another dataset's
    labels read through ``label_map``, and its results set against the model's own test split
    (whose scores the model folder keeps: `medft.evaluation.external`); the images flagged
    out of distribution, when the model folder has the statistics (or ``ood`` asks)."""
    folders, dataset_name, split = options.model, options.dataset, options.split
    tuning_split, label_map = options.tune_split, read_label_map(options.label_map)
    dataset, task = labelled_dataset(dataset_name, folders[0], split, label_map=label_map)
    attributes = subgroup_attributes(
        options.subgroups, dataset_name, dataset[split], split, "--subgroups"
    )
    members = load_members(folders)
    ood = ood_scorer(members, options.ood)
    views = tta_views(options.tta, folders) if options.tta else [ORIGINAL]
    settings = {
        "batch_size": options.batch_size,
        "num_workers": options.num_workers,
        "views": views,
    }
    scores, unreadable = split_scores(
        members, dataset[split], task, attributes=attributes, features=ood, **settings
    )
    tuning, stored = None, None
    needs_thresholds = bool(task.thresholded_labels) and options.threshold is None
    if needs_thresholds and tuning_split == split:
        tuning = scores
    elif needs_thresholds and tuning_split in dataset:
        tuning, _ = split_scores(members, dataset[tuning_split], task, **settings)
    elif needs_thresholds and len(members) == 1:
        stored = stored_thresholds(members[0], None)
    report = evaluate_scores(
        task,
        scores,
        split=split,
        tuning=tuning,
        tuning_split=tuning_split,
        stored=stored,
        options=options,
    )
    report.model = public_names.model_name(folders[0])
    report.dataset = public_names.dataset_name(dataset_name)
    report.unreadable = unreadable
    report.warnings = fitting_warnings(folders, report.dataset, split) or None
    report.conformal = saved_sets_coverage(members, views, scores, (report.dataset, split), options)
    report.ood = ood.summary(len(dataset[split])) if ood else None
    if len(members) > 1:
        report.members = [public_names.model_name(folder) for folder in folders]
    if len(views) > 1:
        report.tta = [view.name for view in views]
    report.label_map = label_map.summary(split, task) if label_map else None
    local = SplitRecord.of(scores, task, split, report.dataset, dataset[split]._fingerprint)
    local.flagged = ood.scored_flags(len(dataset[split])) if ood else None
    plain = len(members) == len(views) == 1  # scored as pipeline() does
    keep_if_own_test(folders[0], local, plain and label_map is None)
    report.against_own_test = against_own_test(
        folders[0], local, dataset, task, report.thresholds, options, plain
    )
    return report, scores
