"""The task type (binary, multi-class, multi-label) as one abstraction, on the ground floor.

What varies with the task type lives in this package and nowhere else: how labels
are encoded, how logits become probabilities, the loss, the metrics and which are
headlines, which labels get decision thresholds and how they are tuned, what the
ROC / PR figures draw, what the calibration scores, the columns of `medft predict`'s
CSV, and how a dataset stores the labels and splits and folds are stratified by them.
The rest of medft asks the task object. `TaskInfo(label_names, multi_label)` returns
the right kind; `TaskInfo.from_features`, `from_model_config`, `from_name` and
`prepared` read it from where it is recorded. Each kind's module is imported here, which
adds the kind to `TASK_TYPES`.
"""

from medft.tasks.base import TASK_TYPES, TaskInfo
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
