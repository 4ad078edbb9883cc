"""`medft.training.train` with every step of its set-up timed, stopped after a number of steps.

`timed_training` wraps what `train()` calls before its first step (`TIMED`: loading the data,
the subgroup attributes, the run record, the model, the transforms, the Trainer and its data
cache) with `step_anatomy.Timeline`, stamps the Trainer's events, and raises out of the
training loop once the steps asked for are done, so nothing after them (the final
evaluation) runs. Used by `nih_full_scale.py`, one run per process.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from pathlib import Path
from unittest import mock

from step_anatomy import Events, Timeline
from transformers import TrainerCallback

import medft.training.run
from medft.parsing import parse_recipe

# what `train()` calls before its first step: (module, function) -> the step it is, in the
# order of the table (indented: within the step above)
TIMED = {
    ("medft.training.run", "load_data"): "data: load_data (all of it)",
    ("medft.data.loading", "read_dataset"): "  of which load_from_disk",
    ("medft.data.loading", "task_of"): "  of which the task (labels off the features)",
    ("medft.data.pipeline", "dataset_identity"): "  of which the splits' identity",
    ("medft.training.run", "evaluated_attributes"): "subgroup attributes of the evaluated split",
    ("medft.training.run", "recipe_settings"): "run record: the settings",
    ("medft.training.run", "checkpoint_to_resume"): "run record: claim output_dir",
    ("medft.training.run", "build_model"): "model build",
    ("medft.training.run", "shorter_side"): "stored image size (64 headers)",
    ("medft.training.run", "set_transforms"): "transforms",
    ("medft.training.run", "build_trainer"): "Trainer set-up (all of it)",
    ("medft.training.build", "image_cache"): "  of which the data-cache decision",
    ("medft.data.cache", "plan_of"): "    of which reading the images' headers",
    ("medft.training.build", "build_loss"): "  of which the loss (class counts)",
}
UNTIL_BEGIN = "Trainer.train until train_begin (accelerate, optimizer)"
FIRST_BATCH, FIRST_STEP = "first batch", "first step (forward, backward, optimizer)"


class StopAfter(Exception):
    """Raised by the callback once the asked steps are done: nothing after them is timed."""


def timed_training(values: dict, steps: int, process_start: float) -> dict:
    """`medft.training.train` on ``values``, stopped after ``steps`` steps: seconds per set-up
    step, until the first step's end, from the process's start (wall clock), steps/s."""
    timeline, messages = Timeline(), []

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= steps:
                raise StopAfter

    class Keep(logging.Handler):
        def emit(self, record):
            if "data_cache" in record.getMessage():
                messages.append(record.getMessage())

    def build_trainer(*args, **kwargs):
        trainer = original_build(*args, **kwargs)
        trainer.add_callback(Events(timeline))
        trainer.add_callback(Stop())
        trainer.get_batch_samples = timeline.timed("first batch", trainer.get_batch_samples)
        trainer.train = timeline.timed("Trainer.train", trainer.train)
        return trainer

    original_build = medft.training.run.build_trainer
    logging.getLogger("medft").addHandler(Keep())
    with contextlib.ExitStack() as stack:
        for (module, name), label in TIMED.items():
            function = build_trainer if name == "build_trainer" else getattr(
                importlib.import_module(module), name)  # fmt: skip
            stack.enter_context(mock.patch(f"{module}.{name}", timeline.timed(label, function)))
        started, wall_started = time.perf_counter(), time.time()
        with contextlib.suppress(StopAfter):
            medft.training.train(*parse_recipe(values=values))
    ends = timeline.instants["step_end"]
    first_end = ends[0]
    rows = {label: timeline.total(label) for label in TIMED.values()}
    train_begin = timeline.instants["train_begin"][0]
    trainer_train = min(start for name, start, _ in timeline.intervals if name == "Trainer.train")
    rows[UNTIL_BEGIN] = train_begin - trainer_train
    rows[FIRST_BATCH] = timeline.total(FIRST_BATCH, before=first_end)
    rows[FIRST_STEP] = first_end - timeline.instants["step_begin"][0]
    top = [label for label in rows if not label.startswith(" ")]
    rows["other"] = (first_end - started) - sum(rows[label] for label in top)
    return {
        "rows": dataset_rows(Path(values["dataset_name"])),
        "steps": rows,
        "until_first_step": first_end - started,
        "from_process_start": wall_started + (first_end - started) - process_start,
        "imports_before_train": wall_started - process_start,
        "steps_done": len(ends),
        "steps_per_second": (len(ends) - 1) / (ends[-1] - first_end) if len(ends) > 1 else None,
        "data_cache": messages,
        "load_average_after": os.getloadavg(),
    }


def dataset_rows(dataset: Path) -> int:
    from datasets import load_from_disk

    return sum(len(split) for split in load_from_disk(str(dataset)).values())
