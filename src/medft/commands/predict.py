"""`medft predict`: score images with a saved model into a CSV, one row per image.

The images are read and scored by the inference engine (`medft.inference`); the
task decides the columns (top-k labels and scores, the binary decision, or every
finding's probability and the findings flagged at their thresholds), and a model with
conformal.json adds each image's prediction set. A file that cannot be read becomes a
row with the reason, and the run goes on.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medft.config.inference import PredictArguments
from medft.errors import MedftError
from medft.evaluation.conformal import ConformalSets
from medft.evaluation.evaluate import declared_attributes, split_columns
from medft.evaluation.thresholds import Thresholds, fixed_thresholds
from medft.inference.classifier import load_members, stored_thresholds
from medft.inference.inputs import Inputs, collect_inputs
from medft.inference.ood import OOD_COLUMNS, flags_text, ood_scorer
from medft.inference.scoring import score_members
from medft.inference.tta import ORIGINAL, tta_views
from medft.tasks import DEFAULT_THRESHOLD, TaskInfo

PREDICTION_SET = "prediction_set"  # the CSV column of the conformal prediction sets


def csv_header(task: TaskInfo, top_k: int, sets: ConformalSets | None = None) -> list[str]:
    conformal = [PREDICTION_SET] if sets is not None else []
    return ["path", "error", *task.csv_header(top_k), *conformal]


def prediction_rows(
    task: TaskInfo,
    names: list[str],
    probs: np.ndarray,
    errors: dict[int, str],
    top_k: int,
    thresholds: dict[str, float],
    sets: ConformalSets | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows: what the task shows per image (top-k labels and scores, or every
    finding's probability and the findings at their thresholds, and the conformal prediction
    set when there are ``sets``), or why it is missing."""
    header = csv_header(task, top_k, sets)
    included = None if sets is None else sets.included(task, probs)
    rows = []
    for index, name in enumerate(names):
        if index in errors:
            rows.append([name, errors[index]] + [""] * (len(header) - 2))
        else:
            cells = task.csv_cells(probs[index], thresholds, top_k)
            in_set = [] if included is None else [task.set_text(included[index])]
            rows.append([name, "", *cells, *in_set])
    return header, rows


def carried_columns(
    found: Inputs, split: str, columns: Sequence[str] | None, header: list[str]
) -> tuple[list[str], list[list[str]]]:
    """The dataset inputs' columns the CSV carries (``columns``, which each must have; else
    every dataset's declared subgroup attributes) and each row's values, empty for files."""
    declared = (name for folder in found.datasets for name in declared_attributes(str(folder)))
    names = list(columns) if columns is not None else list(dict.fromkeys(declared))
    clash = [name for name in names if name in header]
    if clash:
        raise MedftError(f"--columns: the CSV has a column {clash[0]!r} of its own; leave it out.")
    values = [[""] * len(names) for _ in found.files]
    for folder, part in zip(found.datasets, found.splits):
        wanted = names if columns is not None else [n for n in names if n in part.column_names]
        read = split_columns(part, wanted, f"the {split} split of {folder}", "--columns")
        for row in range(len(part)):
            cells = [read[name][row] if name in read else None for name in names]
            values.append(["" if cell is None else str(cell) for cell in cells])
    return names, values


@dataclass
class PredictionSummary:
    """What a `medft predict` run did, for the one-screen summary."""

    output: Path
    task: TaskInfo
    device: str
    images: int
    errors: dict[str, str]  # name -> reason
    ignored: Counter[str]
    seconds: float
    thresholds: Thresholds | None
    counts: Counter[str]  # top-1 label, or each finding flagged
    sets: ConformalSets | None = None  # the conformal prediction sets written, if any
    members: int = 1  # models averaged
    views: list[str] = field(default_factory=lambda: ["original"])  # test-time views averaged
    columns: list[str] = field(default_factory=list)  # carried from the dataset inputs
    ood: dict[str, Any] | None = None  # images flagged out of distribution, when scored


def predict(options: PredictArguments) -> PredictionSummary:
    """Score every image of ``inputs`` with the saved ``model`` (or several: an ensemble,
    probabilities averaged) into a CSV, one row each, averaging over the test-time views of
    ``tta`` if asked; ``thresholds``: a thresholds.json (default: the model folder's; an
    ensemble's come from `medft cv`'s ensemble/thresholds.json, given here). Rows of prepared
    datasets carry their ``columns`` (default: the declared subgroup attributes; [] for none).
    Each image's out-of-distribution score and flag are columns too when the model folder
    has the statistics (`medft.inference.ood`; ``ood`` True requires them, False omits them)."""
    folders, split, top_k = options.model, options.split, options.top_k
    members = load_members(folders, precision=options.precision)
    task = members[0].task
    given = Path(options.thresholds) if options.thresholds else None
    stored = stored_thresholds(members[0], given) if len(members) == 1 or given else None
    stored = stored or fixed_thresholds(task, DEFAULT_THRESHOLD, "default")
    views = tta_views(options.tta, folders) if options.tta else [ORIGINAL]
    sets = members[0].saved_conformal() if len(members) == len(views) == 1 else None
    ood = ood_scorer(members, options.ood)
    found = collect_inputs(options.inputs, split, members[0].dicom)
    header = csv_header(task, top_k, sets) + (OOD_COLUMNS if ood else [])
    carried, carried_values = carried_columns(found, split, options.columns, header)
    start = time.perf_counter()
    probs, errors = score_members(
        members,
        found.files,
        found.splits,
        frames=found.frames,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        progress=options.progress,
        views=views,
        features=ood,
    )
    seconds = time.perf_counter() - start
    header, rows = prediction_rows(
        task, found.names, probs, errors, top_k, stored.values if stored else {}, sets
    )
    if ood:
        header += OOD_COLUMNS
        rows = [row + ood.cells(distance) for row, distance in zip(rows, ood.values(len(rows)))]
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header + carried)
        writer.writerows(row + values for row, values in zip(rows, carried_values))
    cut = stored.values if stored else {}
    counts = Counter(
        label
        for index in range(len(rows))
        if index not in errors
        for label in task.counted(probs[index], cut)
    )
    return PredictionSummary(
        output=output,
        task=task,
        device=members[0].runs_on,
        members=len(members),
        views=[view.name for view in views],
        columns=carried,
        images=len(rows),
        errors={found.names[i]: reason for i, reason in sorted(errors.items())},
        ignored=found.ignored,
        seconds=seconds,
        thresholds=stored,
        counts=counts,
        sets=sets,
        ood=ood.summary(len(rows)) if ood else None,
    )


def format_prediction_summary(summary: PredictionSummary, shown_errors: int = 5) -> str:
    task = summary.task
    rate = summary.images / summary.seconds if summary.seconds else float("inf")
    lines = [
        f"Scored {summary.images} image(s) on {summary.device} in {summary.seconds:.1f} s "
        f"({rate:.1f} images/s); {task.task} model, {len(task.label_names)} labels"
        + (f"; an ensemble of {summary.members}" if summary.members > 1 else "")
        + (f"; views averaged: {', '.join(summary.views)}" if len(summary.views) > 1 else "")
        + ".",
        f"unreadable: {len(summary.errors)}"
        + (" (listed in the CSV with the reason)" if summary.errors else ""),
    ]
    for name, reason in list(summary.errors.items())[:shown_errors]:
        lines.append(f"  {name}: {reason}")
    if len(summary.errors) > shown_errors:
        lines.append(f"  ... and {len(summary.errors) - shown_errors} more")
    if summary.ignored:
        lines.append(f"ignored: {sum(summary.ignored.values())} file(s) that are not images")
    if summary.thresholds:
        source = (
            f"{summary.thresholds.method}, tuned on {summary.thresholds.tuned_on}"
            if summary.thresholds.tuned_on
            else f"{summary.thresholds.method}: run medft evaluate to tune them"
        )
        cut = ", ".join(f"{k} >= {v:.3f}" for k, v in list(summary.thresholds.values.items())[:4])
        more = " ..." if len(summary.thresholds.values) > 4 else ""
        lines.append(f"thresholds ({source}): {cut}{more}")
    if summary.sets:
        lines.append(f"{PREDICTION_SET} column: conformal sets, {summary.sets.describe()}")
    common = ", ".join(f"{label} {n}" for label, n in summary.counts.most_common(8))
    lines.append(f"{task.counted_what}: {common or 'none'}")
    if summary.ood:
        lines.append(f"{flags_text(summary.ood)}; columns {', '.join(OOD_COLUMNS)}")
    if summary.columns:
        lines.append(f"columns from the datasets: {', '.join(summary.columns)}")
    lines.append(f"Wrote {summary.output}")
    return "\n".join(lines)
