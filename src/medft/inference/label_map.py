"""`--label-map`: another dataset's label names mapped onto the ones a model predicts.

A site's data rarely names its labels as the model's training data did: a 4-class tumour
dataset (glioma, meningioma, pituitary, notumor) scored by a tumour-vs-normal model needs
glioma, meningioma and pituitary read as tumor, notumor as normal. The map is a YAML file::

    map:               # dataset label: model label (several may map onto one)
      glioma: tumor
      meningioma: tumor
      pituitary: tumor
      notumor: normal
    drop: [unclear]    # dataset labels left out of the evaluation

Every label of the dataset is mapped or dropped, and every label of the model receives one,
so that nothing is evaluated against a label it does not mean. What dropping does is the
task's (`TaskInfo.relabelled`): images of a dropped class are left out (and counted); a
dropped finding of a multi-label dataset is not scored, its images stay. Scalars are read as
text (a label named `no` or `1` stays a name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetDict

from medft.errors import MedftError, first_line
from medft.tasks import TaskInfo

KEYS = ("map", "drop")


@dataclass
class LabelMap:
    """A label map as read from its file; `apply` records the images it left out per split."""

    source: Path
    mapping: dict[str, str]  # dataset label -> model label
    drop: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # split -> images left out

    def problem(self, text: str) -> MedftError:
        return MedftError(f"--label-map {self.source}: {text}")

    def onto(self, dataset_task: TaskInfo, model: TaskInfo, name: str) -> list[int | None]:
        """The model's class index for each of the dataset's labels (None: dropped), after
        checking every name the map gives against both."""
        labels, predicted = dataset_task.label_names, model.label_names
        for label in [*self.mapping, *self.drop]:
            if label not in labels:
                raise self.problem(
                    f"{label!r} is not a label of {name} (its labels: {', '.join(labels)})."
                )
        for label, target in self.mapping.items():
            if target not in predicted:
                raise self.problem(
                    f"{label!r} maps to {target!r}, which is not a label of the model (it "
                    f"predicts {', '.join(predicted)})."
                )
            if label in self.drop:
                raise self.problem(f"{label!r} is both mapped and dropped; keep it in one.")
        for label in labels:
            if label not in self.mapping and label not in self.drop:
                raise self.problem(
                    f"{name}'s label {label!r} is not mapped; map it onto one of the model's "
                    f"labels ({', '.join(predicted)}) or list it under drop."
                )
        for target in predicted:
            if target not in self.mapping.values():
                raise self.problem(
                    f"no label of {name} is mapped onto the model's label {target!r}; the "
                    "evaluation needs every label the model predicts."
                )
        return [predicted.index(self.mapping[label]) if label in self.mapping else None
                for label in labels]  # fmt: skip

    def apply(
        self, dataset: DatasetDict, task: TaskInfo, model: TaskInfo, name: str
    ) -> tuple[DatasetDict, TaskInfo]:
        """Every split of ``dataset`` (labelled as ``task``) relabelled with the model's
        labels, and its task; images of dropped labels left out (`left_out`)."""
        onto = self.onto(task, model, name)
        mapped_task = task.with_labels(model.label_names)
        if not mapped_task.same_labels(model):
            raise self.problem(
                f"{name} holds {task.task} labels and the model predicts {model.task} ones; a "
                "label map renames labels, it cannot turn one label per image into several or "
                "several into one."
            )
        parts = {}
        for split, part in dataset.items():
            values = task.relabelled(list(part.with_format(None)[task.label_column]), onto)
            kept = [row for row, value in enumerate(values) if value is not None]
            if not kept:
                raise self.problem(f"it drops every image of the {split} split of {name}.")
            filler = values[kept[0]]  # stands in for the rows left out just below
            column = [filler if value is None else value for value in values]
            part = part.remove_columns(task.label_column).add_column(
                task.label_column, column, feature=mapped_task.label_feature()
            )
            parts[split] = part.select(kept) if len(kept) < len(values) else part
            self.left_out[split] = len(values) - len(kept)
        return DatasetDict(parts), mapped_task

    def summary(self, split: str, task: TaskInfo) -> dict[str, Any]:
        """What metrics.json says about the map: the mapping, the dropped labels, what
        dropping did and how many images of ``split`` it left out."""
        return {
            "map": dict(self.mapping),
            "drop": list(self.drop),
            "dropped_labels": task.dropped_labels,
            "images_left_out": self.left_out.get(split, 0),
        }


def read_label_map(path: Path | None) -> LabelMap | None:
    """The label map in ``path`` (None without one); a file that is not one is a one-line
    error."""
    if path is None:
        return None
    try:
        content = yaml.load(Path(path).read_text(), Loader=yaml.BaseLoader)  # scalars as text
    except OSError as error:
        raise MedftError(f"--label-map {path} cannot be read ({first_line(error)}).") from None
    except yaml.YAMLError as error:
        raise MedftError(f"--label-map {path} is not valid YAML ({first_line(error)}).") from None
    shape = "map: (dataset label: model label) and optionally drop: (a list of dataset labels)"
    if not isinstance(content, dict) or "map" not in content or set(content) - set(KEYS):
        found = ", ".join(content) if isinstance(content, dict) else type(content).__name__
        raise MedftError(f"--label-map {path} must hold {shape}; found {found or 'nothing'}.")
    mapping, drop = content["map"], content.get("drop") or []
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise MedftError(f"--label-map {path}: map: must give one model label per dataset label.")
    if not isinstance(drop, list) or not all(isinstance(label, str) for label in drop):
        raise MedftError(f"--label-map {path}: drop: must be a list of dataset labels.")
    return LabelMap(Path(path), dict(mapping), list(drop))
