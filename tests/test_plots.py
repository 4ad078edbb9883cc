import numpy as np
from PIL import Image

from medft.evaluation import plots
from medft.evaluation.calibration import reliability
from medft.evaluation.plots import (
    CurvePanel,
    operating_point,
    plot_confusion_matrix,
    plot_explanation,
    plot_pr_curves,
    plot_reliability,
    plot_roc_curves,
    plot_training_curves,
)
from medft.tasks import TaskInfo

HISTORY = [
    {"epoch": 1.0, "loss": 1.2},
    {"epoch": 1.0, "eval_loss": 1.0, "eval_macro_f1": 0.4},
    {"epoch": 1.0, "train_macro_f1": 0.45},
    {"epoch": 2.0, "loss": 0.8},
    {"epoch": 2.0, "eval_loss": 0.9, "eval_macro_f1": 0.6},
    {"epoch": 2.0, "train_macro_f1": 0.7},
    {"epoch": 2.0, "train_loss": 1.0, "train_runtime": 3.0},
]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_training_curves_are_a_png(tmp_path):
    path = plot_training_curves(HISTORY, "macro_f1", tmp_path / "curves.png")
    assert png_size(path)[0] > 800


def test_training_curves_say_which_train_curve_is_which(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "save", lambda figure, path: drawn.append(figure) or path)
    running = [
        {"epoch": 1.0, "loss": 1.2, "train_aug_macro_f1": 0.3},
        {"epoch": 1.0, "eval_loss": 1.0, "eval_macro_f1": 0.4},
    ]
    plot_training_curves(HISTORY + running, "macro_f1", tmp_path / "curves.png")
    loss, metric = (
        [text.get_text() for text in axis.get_legend().get_texts()] for axis in drawn[0].axes
    )
    assert loss == ["train (augmented, running)", "validation"]
    assert metric == ["train (augmented, running)", "train (sample, re-scored)", "validation"]


def test_the_confusion_matrix_grows_with_the_classes(tmp_path):
    small = plot_confusion_matrix(
        np.array([[3, 1], [0, 4]]), ["normal", "tumor"], tmp_path / "two.png"
    )
    names = [f"Class {i} T1C+" for i in range(44)]
    matrix = np.diag(np.full(44, 3))
    matrix[5, 6] = 2
    matrix[7] = 0  # a class without test images: its row stays blank, not a division by zero
    large = plot_confusion_matrix(matrix, names, tmp_path / "44.png")
    assert png_size(large)[0] > 2 * png_size(small)[0]


def test_roc_and_pr_curves_have_one_panel_per_problem_and_mark_the_threshold(tmp_path):
    targets = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.9])
    panel = CurvePanel("tumor vs normal", targets, scores, threshold=0.5, auroc=7 / 9, auprc=0.87)
    assert operating_point(panel) == (1 / 3, 2 / 3, 2 / 3)  # FPR, sensitivity, precision
    one_class = CurvePanel("Hernia", np.zeros(6, dtype=int), scores, threshold=0.5)
    assert operating_point(one_class) is None
    single = plot_roc_curves([panel], tmp_path / "roc1.png")
    fourteen = plot_roc_curves([panel] * 13 + [one_class], tmp_path / "roc14.png")
    assert png_size(fourteen)[1] > 2 * png_size(single)[1]  # 4 rows of panels
    assert png_size(plot_pr_curves([panel, one_class], tmp_path / "pr.png"))[0] > 0


def test_reliability_diagram_and_explanation_are_pngs(tmp_path):
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.45, 0.55], [0.2, 0.8]])
    bins = reliability(probs, np.array([0, 1, 1, 1]), TaskInfo(["a", "b"], multi_label=False), 15)
    assert png_size(plot_reliability(bins, tmp_path / "r.png"))[0] > 0
    overlay = np.zeros((32, 32, 3), dtype=np.uint8)
    path = plot_explanation(
        Image.new("L", (40, 40), 90),
        overlay,
        [("tumor", 0.8), ("normal", 0.2)],
        "tumor",
        "scan.png",
        tmp_path / "e.png",
    )
    assert png_size(path)[0] > 0
