"""The model card's "Performance by subgroup" section: per attribute (sex, age band, view...)
each group's table against the rest of the split, the sensitivities at the thresholds,
why small groups say little, and the forest plot (`medft.evaluation.subgroups` scores
them; `medft.evaluation.card` places the section after the results)."""

from __future__ import annotations

from medft.evaluation.evaluate import EvaluationReport
from medft.evaluation.plots import subgroups_name
from medft.evaluation.reporting import interval_text, signed
from medft.evaluation.subgroups import (
    MIN_IMAGES,
    MIN_POSITIVES,
    AttributeResult,
    GroupResult,
    sensitivity_key,
)
from medft.tasks import TASK_TYPES

SUBGROUPS_HEADING = "## Performance by subgroup"


def value_cell(
    value: float | None,
    interval: dict | None,
    gap: float | None = None,
    gap_interval: dict | None = None,
) -> str:
    """A metric with its 95% CI, and below it the gap to the rest with its CI."""
    if value is None:
        return "-"
    cell = f"{value:.3f} ({interval_text(interval, 3, '-')})"
    if gap is not None:
        cell += f"<br>gap {signed(gap)} ({interval_text(gap_interval, 3, ' to ')})"
    return cell


def group_rows(attribute: AttributeResult, metrics: list[str], labels: list[str]) -> list[str]:
    """The attribute's table: each group's size, positives (of a single thresholded label),
    and each headline metric with its CI and its gap to the rest; † marks groups too small."""
    columns = ["group", "images", "patients"] + [f"positives ({label})" for label in labels]
    columns += [metric.replace("_", " ") for metric in metrics]

    def row(group: GroupResult) -> list[str]:
        cells = [
            group.value + " †" * group.too_small,
            str(group.images),
            "-" if group.patients is None else str(group.patients),
        ]
        cells += [str(group.positives[label]) for label in labels]
        return cells + [
            value_cell(
                group.metrics.get(m),
                group.intervals.get(m),
                group.gaps.get(m),
                group.gap_intervals.get(m),
            )
            for m in metrics
        ]

    return [
        "| " + " | ".join(columns) + " |",
        "|---" * len(columns) + "|",
        *("| " + " | ".join(row(group)) + " |" for group in attribute.groups),
    ]


def label_rows(attribute: AttributeResult, labels: list[str]) -> list[str]:
    """Per thresholded label: each group's positives and sensitivity (with its CI) at the
    threshold, and the group with the lowest sensitivity."""
    groups = attribute.groups
    columns = ["label", *(group.value + " †" * group.too_small for group in groups), "lowest"]
    rows = []
    for label in labels:
        key, worst = sensitivity_key(label), attribute.worst_sensitivity.get(label)
        cells = [label]
        for group in groups:
            sensitivity = group.metrics.get(key)
            shown = "-" if sensitivity is None else value_cell(sensitivity, group.intervals[key])
            few = " ‡" * (label in group.few_positives)
            cells.append(f"{group.positives[label]}{few} · {shown}")
        cells.append(f"{worst['group']} {worst['sensitivity']:.3f}" if worst else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|", *rows]


def subgroup_section(report: EvaluationReport) -> list[str]:
    """Performance by subgroup: per attribute the groups' table, the sensitivities at the
    thresholds (the lowest group's), why small groups say little, and the forest plot."""
    boot, labels = report.bootstrap, list(report.thresholds.values) if report.thresholds else []
    metrics = list(TASK_TYPES[report.task].headline)
    lines = [
        SUBGROUPS_HEADING,
        f"Each group of the {report.split} split against the rest of it. Values with 95% "
        f"percentile bootstrap intervals over {boot['resamples']} resamples of {boot['unit']}s "
        "(the draws of the intervals above); the gap is the group's value minus the rest's, "
        "scored on the same draws. Sensitivity is at the thresholds above. † marks a group too "
        f"small to judge (fewer than {MIN_IMAGES} images, or fewer than {MIN_POSITIVES} "
        "positives of every thresholded label): shown, not to be relied on.",
    ]
    for attribute in report.subgroups or []:
        lines += [
            f"### {attribute.attribute}",
            "\n".join(group_rows(attribute, metrics, labels if len(labels) == 1 else [])),
        ]
        if len(labels) > 1:
            lines.append(
                "Positives · sensitivity (95% CI) per label, at its threshold; ‡ fewer than "
                f"{MIN_POSITIVES} positives, left out of the lowest:\n\n"
                + "\n".join(label_rows(attribute, labels))
            )
        else:
            lines += [f"Lowest sensitivity: {lowest}" for lowest in lowest_lines(attribute)]
        notes = [
            f"{'† ' * group.too_small}{group.value}: {group.caveat()}."
            for group in attribute.groups
            if group.too_small or (group.caveat() and not set(metrics) <= set(group.metrics))
        ]  # the groups marked, and those with a metric left out (a class absent)
        lines += [" ".join(notes)] if notes else []
        name = subgroups_name(attribute.attribute)
        if name in report.files:
            lines.append(f"![By {attribute.attribute}]({name})")
    return lines


def lowest_lines(attribute: AttributeResult) -> list[str]:
    return [
        f"`{label}` in {worst['group']}, {worst['sensitivity']:.3f} "
        f"(95% CI {interval_text(worst['interval'], 3, '-')})."
        for label, worst in attribute.worst_sensitivity.items()
    ]
