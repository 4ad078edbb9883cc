"""Every figure medft draws, as PNG files: training curves, confusion matrix, ROC and
precision-recall curves, reliability diagrams (alone, or side by side), subgroup forest plots,
and saliency explanations.

Functions take plain arrays and numbers worked out elsewhere (`medft.evaluation.evaluate`,
`medft.commands.explain`) and only draw; each returns the path it wrote.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from medft.evaluation.calibration import Reliability  # noqa: E402
from medft.tasks import CurvePanel  # noqa: E402
from medft.training.running_scores import PREFIX  # noqa: E402

CURVES_NAME = "training_curves.png"
CONFUSION_NAME = "confusion_matrix.png"
ROC_NAME = "roc_curves.png"
PR_NAME = "pr_curves.png"
RELIABILITY_NAME = "reliability_diagram.png"
UNCALIBRATED_NAME = "reliability_diagram_uncalibrated.png"
SUBGROUPS_NAME = "subgroups_{}.png"  # one forest plot per attribute
DPI = 100
COUNTS_UP_TO = 20  # classes; above this the confusion matrix shows colours only


def save(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


# training -------------------------------------------------------------------------------------


def series(log_history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one logged quantity."""
    points = [
        (entry["epoch"], entry[key]) for entry in log_history if key in entry and "epoch" in entry
    ]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(log_history: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """Loss and the main metric per epoch, train and validation, side by side. The train
    curve is the epoch's own augmented batches as they were trained on (running); a training
    sample re-scored at each evaluation (`train_metrics_samples`) is drawn too when logged."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    running = "train (augmented, running)"
    panels = (
        (loss_axis, "loss", ("loss", running), ("eval_loss", "validation")),
        (
            metric_axis,
            metric,
            (f"{PREFIX}{metric}", running),
            (f"train_{metric}", "train (sample, re-scored)"),
            (f"eval_{metric}", "validation"),
        ),
    )
    for axis, title, *lines in panels:
        for key, label in lines:
            epochs, values = series(log_history, key)
            if values:
                axis.plot(epochs, values, marker="o", label=label)
        axis.set(title=title.replace("_", " "), xlabel="epoch")
        if axis is metric_axis:
            axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    return save(figure, path)


# evaluation -----------------------------------------------------------------------------------


def plot_confusion_matrix(matrix: np.ndarray, label_names: list[str], path: Path) -> Path:
    """Rows are true classes, coloured by the share of that class's images in each column, so
    rare classes read as clearly as common ones; the figure and fonts scale with the classes."""
    matrix = np.asarray(matrix)
    n = len(label_names)
    show_counts = n <= COUNTS_UP_TO
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, matrix / totals, np.nan)
    side = min(max(4.5, 1.5 + 0.3 * n), 20)
    font = 9 if n <= 12 else 6
    figure, axis = plt.subplots(figsize=(side + 1.2, side), constrained_layout=True)
    colours = plt.get_cmap("Blues").with_extremes(bad="lightgrey")  # no images of the class
    image = axis.imshow(shares, cmap=colours, vmin=0, vmax=1)
    colorbar = figure.colorbar(image, ax=axis, shrink=0.6)
    colorbar.set_label("share of the true class's images")
    axis.set_xticks(range(n), label_names, rotation=90, fontsize=font)
    axis.set_yticks(range(n), label_names, fontsize=font)
    axis.set(xlabel="predicted class", ylabel="true class")
    empty = "; grey: no images of the class" if (totals == 0).any() else ""
    axis.set_title(
        f"Confusion matrix ({int(matrix.sum())} images; rows normalised{empty})", fontsize=10
    )
    if show_counts:
        for row, column in zip(*np.nonzero(matrix)):
            dark = shares[row, column] > 0.6
            axis.text(
                column,
                row,
                int(matrix[row, column]),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if dark else "black",
            )
    return save(figure, path)


def grid(panels: int, size: float = 3.2) -> tuple[plt.Figure, list[plt.Axes]]:
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(size * columns, size * rows), squeeze=False, constrained_layout=True
    )
    axes = list(axes.ravel())
    for spare in axes[panels:]:
        spare.axis("off")
    return figure, axes[:panels]


def operating_point(panel: CurvePanel) -> tuple[float, float, float] | None:
    """(false positive rate, sensitivity, precision) when positive means score >= threshold."""
    if panel.threshold is None:
        return None
    called = panel.scores >= panel.threshold
    positives = panel.targets == 1
    if positives.all() or not positives.any():
        return None
    precision = positives[called].mean() if called.any() else 1.0
    return called[~positives].mean(), called[positives].mean(), precision


def two_classes(panel: CurvePanel) -> bool:
    return len(np.unique(panel.targets)) == 2


def mark_threshold(
    axis: plt.Axes, panel: CurvePanel, where: tuple[float, float], legend_corner: str
) -> None:
    """The panel's threshold as a point on its curve, named in the legend."""
    axis.plot(*where, "o", color="crimson", label=f"threshold {panel.threshold:.3f}")
    axis.legend(loc=legend_corner, fontsize=7)


def label_unit_square(axis: plt.Axes, title: str, x_label: str, y_label: str) -> None:
    """Title, axis labels and grid of a curve drawn on [0, 1] x [0, 1]."""
    axis.set_title(title, fontsize=9)
    axis.set(xlim=(0, 1), ylim=(0, 1.02), aspect="equal")
    axis.set_xlabel(x_label, fontsize=8)
    axis.set_ylabel(y_label, fontsize=8)
    axis.grid(alpha=0.3)


def plot_roc_curves(panels: list[CurvePanel], path: Path, title: str = "ROC") -> Path:
    """Sensitivity against 1 - specificity, one panel per problem, the threshold marked."""
    figure, axes = grid(len(panels))
    for axis, panel in zip(axes, panels):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        if two_classes(panel):
            false_positive_rate, true_positive_rate, _ = roc_curve(panel.targets, panel.scores)
            axis.plot(false_positive_rate, true_positive_rate, linewidth=1.5)
        point = operating_point(panel)
        if point:
            mark_threshold(axis, panel, (point[0], point[1]), "lower right")
        area = "undefined (one class)" if panel.auroc is None else f"{panel.auroc:.3f}"
        label_unit_square(axis, f"{panel.title}\nAUROC {area}", "1 - specificity", "sensitivity")
    figure.suptitle(title)
    return save(figure, path)


def plot_pr_curves(panels: list[CurvePanel], path: Path, title: str = "Precision-recall") -> Path:
    """Precision against recall, one panel per problem, with the prevalence as the baseline."""
    figure, axes = grid(len(panels))
    for axis, panel in zip(axes, panels):
        prevalence = float(np.mean(panel.targets == 1))
        axis.axhline(prevalence, color="grey", linestyle=":", linewidth=1)
        if two_classes(panel):
            precision, recall, _ = precision_recall_curve(panel.targets, panel.scores)
            axis.plot(recall, precision, linewidth=1.5, drawstyle="steps-post")
        point = operating_point(panel)
        if point:
            mark_threshold(axis, panel, (point[1], point[2]), "lower left")
        area = "undefined (one class)" if panel.auprc is None else f"{panel.auprc:.3f}"
        panel_title = f"{panel.title}\nAUPRC {area}, prevalence {prevalence:.2f}"
        label_unit_square(axis, panel_title, "recall (sensitivity)", "precision")
    figure.suptitle(title)
    return save(figure, path)


def plot_reliability(bins: Reliability, path: Path, note: str = "") -> Path:
    """Share that came true per bin, its gap to the bin's mean score, and the bin counts."""
    return plot_reliabilities([(bins, note)], path)


def plot_reliabilities(panels: list[tuple[Reliability, str]], path: Path) -> Path:
    """Reliability diagrams side by side, each with its note (a site's beside a model's own)."""
    figure, axes = plt.subplots(
        2,
        len(panels),
        figsize=(5 * len(panels), 6),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
        constrained_layout=True,
    )
    for (top, bottom), (bins, note) in zip(axes.T, panels):
        width, filled = np.diff(bins.edges), bins.counts > 0
        left = bins.edges[:-1][filled]
        top.bar(
            left,
            bins.fraction_true[filled],
            width=width[filled],
            align="edge",
            edgecolor="navy",
            color="cornflowerblue",
            label="observed",
        )
        gap = bins.mean_score[filled] - bins.fraction_true[filled]
        top.bar(
            left,
            gap,
            bottom=bins.fraction_true[filled],
            width=width[filled],
            align="edge",
            color="none",
            edgecolor="crimson",
            hatch="//",
            label="gap to mean score",
        )
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        top.set(xlim=(0, 1), ylim=(0, 1.02), ylabel=bins.true_axis)
        title = f"Reliability{note and ', ' + note}: ECE {bins.ece:.3f} ({len(bins.counts)} bins)"
        top.set_title(title, fontsize=10)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        bottom.bar(bins.edges[:-1], bins.counts, width=width, align="edge", color="grey")
        bottom.set(ylabel="scores in bin", xlabel=bins.score_axis)
    return save(figure, path)


def plot_fold_metrics(values: list[float], metric: str, path: Path) -> Path:
    """The metric of each cross-validation fold on its held-out images, with the mean and
    one standard deviation either side."""
    figure, axis = plt.subplots(figsize=(1.2 * len(values) + 2.5, 3.6), constrained_layout=True)
    folds = np.arange(len(values))
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    axis.axhspan(mean - sd, mean + sd, color="cornflowerblue", alpha=0.2, label="mean +- sd")
    axis.axhline(mean, color="navy", linewidth=1.5, label=f"mean {mean:.3f}")
    axis.bar(folds, values, width=0.55, color="steelblue")
    for fold, value in zip(folds, values):
        axis.text(fold, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(folds, [f"fold {k}" for k in folds], fontsize=8)
    low = min(values) - 2 * sd if sd else min(values) * 0.9
    axis.set_ylim(max(0.0, low), min(1.0, max(values) + 2 * sd) + 0.02)
    axis.set_ylabel(f"{metric} (held-out fold)")
    axis.set_title(
        f"Cross-validation, {len(values)} folds: {metric} {mean:.3f} +- {sd:.3f}", fontsize=10
    )
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    return save(figure, path)


def subgroups_name(attribute: str) -> str:
    """The forest plot's file name: the attribute with anything but letters, digits, - and _
    replaced."""
    return SUBGROUPS_NAME.format(re.sub(r"[^\w-]", "_", attribute, flags=re.ASCII))


def plot_subgroups(
    attribute: str, groups: list[Any], overall: dict[str, float], metrics: list[str], path: Path
) -> Path:
    """A forest plot: each group's value of each metric with its 95% interval, against the
    whole split's value (dashed); groups too small to say anything in grey, hollow."""
    panels = [metric for metric in metrics if any(metric in g.metrics for g in groups)]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    height = 0.45 * len(groups) + 1.2
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.6 * columns, height * rows),
        squeeze=False,
        constrained_layout=True,
    )
    names = [f"{g.value} (n={g.images}{', too small' if g.too_small else ''})" for g in groups]
    for axis, metric in zip(axes.ravel(), panels):
        for row, group in enumerate(groups):
            if metric not in group.metrics:
                continue
            value, interval = group.metrics[metric], group.intervals.get(metric)
            colour = "grey" if group.too_small else "navy"
            if interval:
                axis.plot([interval["low"], interval["high"]], [row, row], color=colour)
            axis.plot(
                value,
                row,
                "o",
                color=colour,
                markerfacecolor="white" if group.too_small else colour,
            )
        if metric in overall:
            axis.axvline(
                overall[metric],
                color="crimson",
                linestyle="--",
                linewidth=1,
                label=f"all images {overall[metric]:.3f}",
            )
            axis.legend(fontsize=7, loc="best")  # away from the points
        axis.set_yticks(range(len(groups)), names, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(-0.02, 1.02)
        axis.set_title(metric.replace("_", " "), fontsize=9)
        axis.grid(alpha=0.3, axis="x")
    for axis in axes.ravel()[len(panels) :]:
        axis.axis("off")
    figure.suptitle(f"By {attribute.replace('_', ' ')}: value and 95% interval", fontsize=10)
    return save(figure, path)


# explanations ---------------------------------------------------------------------------------


def plot_explanation(
    original: Image.Image,
    overlay: np.ndarray,
    scores: list[tuple[str, float]],
    target: str,
    title: str,
    path: Path,
) -> Path:
    """The image, the saliency map over what the model saw, and the top scores (target in red)."""
    figure, (left, middle, right) = plt.subplots(
        1, 3, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.1]}, constrained_layout=True
    )
    left.imshow(original, cmap="gray" if original.mode == "L" else None)
    left.set_title("image", fontsize=9)
    middle.imshow(overlay)
    middle.set_title(f"saliency for '{target}'", fontsize=9)
    for axis in (left, middle):
        axis.axis("off")
    names = [name for name, _ in scores][::-1]
    values = [value for _, value in scores][::-1]
    colours = ["crimson" if name == target else "steelblue" for name in names]
    right.barh(range(len(names)), values, color=colours)
    right.set_yticks(range(len(names)), names, fontsize=8)
    right.set_xlim(0, 1)
    right.set_xlabel("score", fontsize=8)
    for row, value in enumerate(values):
        right.text(min(value + 0.02, 0.85), row, f"{value:.3f}", va="center", fontsize=8)
    right.set_title("predicted", fontsize=9)
    figure.suptitle(title, fontsize=10)
    return save(figure, path)


# augmentation preview -------------------------------------------------------------------------


def plot_augmentation_grid(
    grid: list[list[np.ndarray | None]], titles: list[str], title: str, path: Path
) -> Path:
    """Rows of HxWx3 pictures in [0, 1] (None leaves a cell empty); the first column is the
    image as evaluated, titled with its label."""
    columns = max(len(cells) for cells in grid)
    figure, axes = plt.subplots(len(grid), columns, figsize=(1.6 * columns, 1.7 * len(grid)))
    axes = np.atleast_2d(axes)
    for row, (cells, label) in enumerate(zip(grid, titles)):
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(cells) and cells[column] is not None:
                axis.imshow(cells[column])
        axes[row, 0].set_title(f"{label}\n(as evaluated)", fontsize=7, loc="left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
