"""Rendering an `EvaluationReport`: its files (metrics.json, thresholds.json, the figures),
the one-screen summary `medft evaluate` prints, and the summary at the end of a run.

The model card renders the same report (`medft.evaluation.card`), with the same per-finding
table (`finding_rows`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medft.evaluation.conformal import coverage_lines
from medft.evaluation.evaluate import CHEXNET_NOTE, METRICS_NAME, EvaluationReport, SplitScores
from medft.evaluation.external import AGAINST_OWN_NAME, SECTION, own_reliability
from medft.evaluation.plots import (
    CONFUSION_NAME,
    CURVES_NAME,
    PR_NAME,
    RELIABILITY_NAME,
    ROC_NAME,
    UNCALIBRATED_NAME,
    plot_confusion_matrix,
    plot_pr_curves,
    plot_reliabilities,
    plot_reliability,
    plot_roc_curves,
    plot_subgroups,
    subgroups_name,
)
from medft.evaluation.thresholds import THRESHOLDS_NAME, save_thresholds
from medft.inference.ood import flags_text
from medft.tasks import TASK_TYPES, TaskInfo


def write_evaluation(
    report: EvaluationReport, task: TaskInfo, scores: SplitScores, output: str | Path
) -> list[Path]:
    """metrics.json, thresholds.json (binary and multi-label) and the PNG figures (a forest
    plot per subgroup attribute)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    if report.thresholds:
        written.append(save_thresholds(report.thresholds, task, output / THRESHOLDS_NAME))
    if report.confusion_matrix is not None:
        matrix = np.asarray(report.confusion_matrix)
        written.append(plot_confusion_matrix(matrix, task.label_names, output / CONFUSION_NAME))
    cut = report.thresholds.values if report.thresholds else {}
    panels = task.curve_panels(scores.probs, scores.labels, cut, report.metrics, report.per_finding)
    split = report.split
    written.append(plot_roc_curves(panels, output / ROC_NAME, f"ROC, {split} split"))
    written.append(plot_pr_curves(panels, output / PR_NAME, f"Precision-recall, {split} split"))
    written.append(plot_reliability(report.calibration, output / RELIABILITY_NAME))
    if report.temperature is not None:
        before = report.temperature.before
        written.append(plot_reliability(before, output / UNCALIBRATED_NAME, "before calibration"))
    against = report.against_own_test
    if against and "left_out" not in against:
        own, local = against["own"], against["local"]
        panels = [
            (own_reliability(against), f"own: {own['dataset']} {own['split']}"),
            (report.calibration, f"local: {local['dataset']} {local['split']}"),
        ]
        written.append(plot_reliabilities(panels, output / AGAINST_OWN_NAME))
    headline = list(TASK_TYPES[report.task].headline)
    for attribute in report.subgroups or []:
        path = output / subgroups_name(attribute.attribute)
        written.append(
            plot_subgroups(attribute.attribute, attribute.groups, report.metrics, headline, path)
        )
    report.files = [path.name for path in written]
    metrics_path = output / METRICS_NAME
    metrics_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return [metrics_path, *written]


# text -----------------------------------------------------------------------------------------


def interval_text(interval: dict | None, digits: int = 4, joint: str = " - ") -> str:
    return f"{interval['low']:.{digits}f}{joint}{interval['high']:.{digits}f}" if interval else "-"


def positive_threshold(report: EvaluationReport) -> tuple[str, float] | None:
    """The binary positive class and its cut-off (a report with one thresholded label)."""
    if not report.thresholds or report.per_finding is not None:
        return None
    ((positive, value),) = report.thresholds.values.items()
    return positive, value


def chexnet_aurocs(report: EvaluationReport) -> dict[str, float]:
    """CheXNet's published AUROC per finding, when the report compares with it (NIH models)."""
    rows = (report.chexnet_comparison or {}).get("rows", [])
    return {row["finding"]: row["chexnet_auroc"] for row in rows}


def finding_rows(report: EvaluationReport, digits: int = 3) -> list[dict[str, str]]:
    """The per-finding table, as text cells: AUROC with its 95% CI, threshold, F1, and
    CheXNet's AUROC when the report compares with it."""
    chexnet = chexnet_aurocs(report)
    rows = []
    for name, row in (report.per_finding or {}).items():
        interval = report.confidence_intervals.get(f"auroc_{name}")
        cells = {
            "finding": name,
            "AUROC": "-" if row["auroc"] is None else f"{row['auroc']:.{digits}f}",
            "95% CI": interval_text(interval, 3, "-" if digits == 3 else " - "),
            "threshold": f"{row['threshold']:.3f}",
            "F1": f"{row['f1']:.3f}",
        }
        if chexnet:
            cells["CheXNet*"] = f"{chexnet[name]:.{digits}f}"
        rows.append(cells)
    return rows


def thresholds_text(report: EvaluationReport) -> str:
    thresholds = report.thresholds
    text = f"{thresholds.method}, tuned on {thresholds.tuned_on or '-'}"
    if thresholds.defaulted:
        text += f"; left at 0.5: {', '.join(thresholds.defaulted)}"
    return text


def finding_table(report: EvaluationReport) -> list[str]:
    """The per-finding table, fixed-width, with the thresholds' provenance and CheXNet's note."""
    rows = finding_rows(report)
    chexnet = "CheXNet*" in rows[0]
    lines = [
        "",
        f"  {'finding':<20} {'AUROC':>6}  {'95% CI':<15}  {'thr':>5}  {'F1':>5}"
        + ("  CheXNet*" if chexnet else ""),
    ]
    for row in rows:
        line = (
            f"  {row['finding']:<20} {row['AUROC']:>6}  {row['95% CI']:<15}  "
            f"{row['threshold']:>5}  {row['F1']:>5}"
        )
        lines.append(line + (f"  {row['CheXNet*']}" if chexnet else ""))
    lines.append(f"  thresholds: {thresholds_text(report)}")
    if chexnet:
        lines.append(f"  * {CHEXNET_NOTE}")
    return lines


def temperature_text(scaling) -> str:
    values = ", ".join(f"{value:.3f}" for value in scaling.values[:4])
    more = f", ... ({len(scaling.values)} in all)" if len(scaling.values) > 4 else ""
    return (
        f"calibrated: temperature {values}{more} fitted on the {scaling.fitted_on} split; "
        f"ECE {scaling.before.ece:.4f} before"
    )


def signed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def lowest_sensitivity(attribute) -> str | None:
    """The lowest of the worst groups' sensitivities over the thresholded labels, in words."""
    if not attribute.worst_sensitivity:
        return None
    label, worst = min(attribute.worst_sensitivity.items(), key=lambda i: i[1]["sensitivity"])
    return (
        f"{label} in {worst['group']}: {worst['sensitivity']:.3f} "
        f"({interval_text(worst['interval'], 3)})"
    )


def subgroup_table(report: EvaluationReport) -> list[str]:
    """Per attribute, each group's first headline metric with its 95% CI and its gap to the
    rest of the split, groups too small to judge marked (and why), and the lowest sensitivity
    at the thresholds: one screen; the rest is in metrics.json and the model card."""
    metric = TASK_TYPES[report.task].headline[0]
    lines = [
        "",
        f"Performance by subgroup: {metric} and the gap to the rest of the split (group minus "
        "rest), with 95% CIs; † too small to judge",
        f"  {'group':<22} {'images':>7} {metric:>11}  {'95% CI':<15} {'gap':>7}  95% CI",
    ]
    for attribute in report.subgroups or []:
        lines.append(f"  {attribute.attribute}")
        notes = []
        for group in attribute.groups:
            name = group.value + " †" * group.too_small
            value = group.metrics.get(metric)
            lines.append(
                f"    {name:<20} {group.images:>7} "
                f"{'-' if value is None else f'{value:.3f}':>11}  "
                f"{interval_text(group.intervals.get(metric), 3):<15} "
                f"{signed(group.gaps.get(metric)):>7}  "
                f"{interval_text(group.gap_intervals.get(metric), 3)}"
            )
            if group.too_small or (value is None and group.caveat()):
                notes.append(
                    f"    {'†' * group.too_small or '-'} {group.value}: {group.caveat(shown=3)}"
                )
        lowest = lowest_sensitivity(attribute)
        lines += notes + ([f"    lowest sensitivity at the thresholds: {lowest}"] if lowest else [])
    return lines


def label_map_text(label_map: dict) -> str:
    """The --label-map in words: what maps onto each model label, what was dropped."""
    onto: dict[str, list[str]] = {}
    for label, target in label_map["map"].items():
        onto.setdefault(target, []).append(label)
    text = "labels mapped: " + "; ".join(f"{', '.join(v)} -> {k}" for k, v in onto.items())
    if label_map["drop"]:
        left_out = label_map["images_left_out"]
        text += f"; dropped: {', '.join(label_map['drop'])} ({label_map['dropped_labels']}"
        text += f": {left_out} here)" if left_out else ")"
    return text


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def against_own_test_table(report: EvaluationReport) -> list[str]:
    """The model's own test split beside this one: each headline metric on both and their
    difference with its interval, ECE, prevalence, out-of-distribution flags; or why not."""
    section = report.against_own_test
    if "left_out" in section:
        return ["", f"{SECTION}: left out ({section['left_out']})."]
    own, local, boot = section["own"], section["local"], section["bootstrap"]

    def sample(part: dict) -> str:
        patients = f", {part['patients']} patients" if part["patients"] else ""
        return f"the {part['split']} split of {part['dataset']} ({part['images']} images{patients})"

    units = boot["units"]
    lines = [
        "",
        f"{SECTION}: {sample(own)}; local: {sample(local)}",
        f"  {'metric':<20} {'own':>7} {'local':>7} {'local-own':>9}   95% CI ({boot['resamples']} "
        f"resamples of each: own by {units['own']}, local by {units['local']})",
    ]
    for name, row in section["metrics"].items():
        lines.append(
            f"  {name:<20} {number(row['own']):>7} {number(row['local']):>7} "
            f"{signed(row['difference'], 4):>9}   {interval_text(row['interval'])}"
        )
    calibration = section["calibration"]
    change = calibration["local_ece"] - calibration["own_ece"]
    lines.append(
        f"  {'ECE':<20} {calibration['own_ece']:>7.4f} {calibration['local_ece']:>7.4f} "
        f"{signed(change, 4):>9}"
    )
    flagged = section.get("flagged_out_of_distribution")
    if flagged:
        lines.append(
            f"  {'out of distribution':<20} {flagged['own']:>7.1%} {flagged['local']:>7.1%}"
        )
    lines.append(f"  {'prevalence':<20} {'own':>7} {'local':>7}")
    for name, shares in section["prevalence"].items():
        lines.append(f"    {name:<18} {shares['own']:>7.3f} {shares['local']:>7.3f}")
    judged = "at the same thresholds, those above" if report.thresholds else "by the top class"
    drawn = AGAINST_OWN_NAME in report.files
    return [*lines, f"  Both judged {judged}" + f"; figure: {AGAINST_OWN_NAME}" * drawn]


def format_evaluation(report: EvaluationReport, output: str | Path | None = None) -> str:
    """One screen: headline metrics with intervals, thresholds, calibration, the images
    flagged out of distribution, the weakest classes or the per-finding table (with
    CheXNet's for NIH models), performance by subgroup, and the files."""
    boot = report.bootstrap
    patients = f", {report.patients} patients" if report.patients else ""
    lines = [
        f"Evaluation on the {report.split} split: {report.images} images{patients}; "
        f"{report.task}, {len(report.labels)} labels.",
        "",
        f"  {'metric':<20} {'value':>7}   95% CI ({boot['resamples']} {boot['unit']} resamples)",
    ]
    for name, value, interval in report.headline():
        lines.append(f"  {name:<20} {value:>7.4f}   {interval_text(interval)}")
    extra = [k for k in report.metrics if k.startswith("top_") or k == "weighted_f1"]
    lines += [f"  {name:<20} {report.metrics[name]:>7.4f}" for name in extra]
    positive = positive_threshold(report)
    if positive:
        source = f"tuned on {report.thresholds.tuned_on}" if report.thresholds.tuned_on else "fixed"
        lines.append(
            f"  sensitivity and specificity call '{positive[0]}' at probability >= "
            f"{positive[1]:.4f} ({report.thresholds.method}, {source})"
        )
    calibration = report.calibration
    lines.append(
        f"  ECE {calibration.ece:.4f} ({len(calibration.counts)} bins; {calibration.scored})"
    )
    if report.temperature is not None:
        lines.append(f"  {temperature_text(report.temperature)}")
    if report.tta:
        lines.append(
            f"  test-time augmentation: probabilities averaged over {', '.join(report.tta)}"
        )
    if report.members:
        lines.append(f"  ensemble: probabilities averaged over {len(report.members)} models")
    if report.label_map:
        lines.append(f"  {label_map_text(report.label_map)}")
    if report.ood:
        lines.append(f"  {flags_text(report.ood)}")
    if report.per_class is not None and len(report.labels) > 2:
        weakest = sorted(report.per_class.items(), key=lambda item: item[1]["f1"])[:5]
        lines += ["", "  lowest F1: " + ", ".join(f"{n} {r['f1']:.2f}" for n, r in weakest)]
    if report.per_finding is not None:
        lines += finding_table(report)
    if report.subgroups:
        lines += subgroup_table(report)
    if report.against_own_test:
        lines += against_own_test_table(report)
    if report.conformal:
        lines += coverage_lines(report.conformal)
    if report.warnings:
        lines += ["", *(f"WARNING: {warning}" for warning in report.warnings)]
    if report.unreadable:
        lines += [
            "",
            f"unreadable: {len(report.unreadable)} image(s) left out (listed in "
            f"{METRICS_NAME} with the reason)",
        ]
    if output is not None:
        lines += ["", f"Wrote {', '.join(report.files)} and {METRICS_NAME} to {output}"]
    return "\n".join(lines)


def headline_lines(report: EvaluationReport) -> list[str]:
    """The evaluation's headline metrics with their 95% intervals, one per line."""
    return [
        f"  {name:<20} {value:.4f}"
        + (f"  (95% CI {interval['low']:.4f} - {interval['high']:.4f})" if interval else "")
        for name, value, interval in report.headline()
    ]


def format_run_summary(
    output_dir: str | Path,
    evaluation: EvaluationReport | None,
    test_metrics: dict[str, float] | None = None,
) -> str:
    """The evaluation's headline metrics (with intervals, as the card shows them; without an
    evaluation, the Trainer's test metrics), where the model is, and how to use it."""
    if evaluation is not None:
        split = evaluation.split
        title = "Test metrics:" if split == "test" else f"No test split; {split} metrics:"
        lines = ["", title, *headline_lines(evaluation)]
    else:
        shown = {
            key.removeprefix("test_"): value
            for key, value in (test_metrics or {}).items()
            if not key.startswith("test_auroc_")
            and not key.endswith(("runtime", "per_second", "loss", "epoch"))
        }
        lines = ["", "Test metrics:" if shown else "No test split: see eval_results.json."]
        lines += [f"  {key:<20} {value:.4f}" for key, value in shown.items()]
    lines += [
        f"Model saved to {output_dir} (model card: README.md, curves: {CURVES_NAME}"
        + (f"; evaluation: {METRICS_NAME} and plots)." if evaluation is not None else ")."),
        "Classify an image with it:",
        "",
        "    from transformers import pipeline",
        f'    classifier = pipeline("image-classification", model="{output_dir}")',
        '    print(classifier("scan.png"))',
        "",
        f"or a folder of them: medft predict --model {output_dir} FOLDER --output predictions.csv",
        "",
    ]
    return "\n".join(lines)
