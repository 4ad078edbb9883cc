"""The task type (binary, multi-class, multi-label) as one abstraction, on the ground floor.

What varies with the task type lives in this package and nowhere else: how labels
are encoded, how logits become probabilities, the loss, the metrics and which are
headlines, which labels get decision thresholds and how they are tuned, what the
ROC / PR figures draw, what the calibration scores, and the columns of `medft
predict`'s CSV. The rest of medft asks the task object. `TaskInfo(label_names,
multi_label)` returns the right kind.
"""

from medft.tasks.base import LABEL_COLUMNS, TASK_TYPES, TaskInfo
from medft.tasks.multilabel import MultilabelTask
from medft.tasks.scores import (
    DEFAULT_THRESHOLD,
    CalibrationScores,
    CurvePanel,
    auprc_or_none,
    auroc_or_none,
)
from medft.tasks.single_label import BinaryTask, MulticlassTask

__all__ = [
    "DEFAULT_THRESHOLD",
    "LABEL_COLUMNS",
    "TASK_TYPES",
    "BinaryTask",
    "CalibrationScores",
    "CurvePanel",
    "MulticlassTask",
    "MultilabelTask",
    "TaskInfo",
    "auprc_or_none",
    "auroc_or_none",
]
