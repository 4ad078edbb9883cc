"""Where the seconds of one `medft train` run go, phase by phase, beside the model alone.

    python benchmarks/step_anatomy.py --device cpu          # ResNet-18 at 64 px (the default)
    python benchmarks/step_anatomy.py --device cuda --models resnet50 vit_base_patch16_224 \
        --image-size 224 --batch-size 128 --precision bf16 --per-class 100

One run of `medft.training.train` on generated brain scans (`medft synthesize`, prepared
at 8/7 of the input size), with per-epoch validation, checkpoints, the test split and
the final evaluation, as a user runs it. A `TrainerCallback` stamps the Trainer's events
(train / epoch / step begin and end); thin wrappers time what the callbacks cannot see:
fetching each batch (`get_batch_samples`, the Trainer's only read of the loader),
evaluation, checkpoints, and the steps of `train()` before and after the training loop.

Then the model alone: the same model and optimizer object the Trainer built, the same
loss, precision and gradient clipping, on one batch of tensors already on the device,
timed the same way (host clock at each step's end, no synchronisation per step), so the
ratio of the steady steps is what medft adds around the model.

What bounds the run is read off the measurements, not inferred from a ratio: the loader
when waiting for batches takes a large share of the training loop (WAIT_BOUND), the
model when medft's steady step is within MODEL_BOUND of the model alone's, else
overhead (per-step work around the model: the Trainer, the device transform, syncs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from transformers import TrainerCallback

import medft.training.run
import medft.training.trainer
from medft.config.prepare import BrainTumorArguments
from medft.parsing import parse_recipe
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_brain_tumor_44c

WAIT_BOUND = 0.25  # share of the training loop spent waiting for batches
MODEL_BOUND = 0.15  # medft's steady step at most this much slower than the model alone's
AT_BOUNDARIES = (  # timed phases that happen between epochs
    "per-epoch evaluation",
    "checkpoints",
    "waiting for batches",
    "train curve: running scores",
)
AFTER_TRAINING = {  # functions `train()` calls after the loop -> the phase they are
    "save_model": "after training: save the model",
    "evaluate_scores": "after training: report (CIs, thresholds)",
    "write_evaluation": "after training: report files and figures",
    "model_card": "after training: model card",
    "plot_training_curves": "after training: curves plot",
    "save_ood_statistics": "after training: out-of-distribution statistics",
}


@dataclass
class Timeline:
    """Labelled intervals and named instants on one clock (`time.perf_counter`)."""

    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    instants: dict[str, list[float]] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.instants.setdefault(name, []).append(time.perf_counter())

    def timed(self, label: str | Callable[[], str], function: Callable) -> Callable:
        """``function``, its every call recorded as an interval labelled ``label``."""

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                name = label() if callable(label) else label
                self.intervals.append((name, start, time.perf_counter()))

        return call

    def total(self, label: str, after: float = float("-inf"), before: float = float("inf")):
        return sum(
            end - start
            for name, start, end in self.intervals
            if name == label and after <= start and end <= before
        )

    def within(self, after: float, before: float, labels: tuple[str, ...]) -> float:
        return sum(self.total(label, after, before) for label in labels)


class Events(TrainerCallback):
    """The Trainer's own events, stamped on the timeline."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    def on_train_begin(self, args, state, control, **kwargs):
        self.timeline.mark("train_begin")

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.timeline.mark("epoch_begin")

    def on_step_begin(self, args, state, control, **kwargs):
        self.timeline.mark("step_begin")

    def on_step_end(self, args, state, control, **kwargs):
        self.timeline.mark("step_end")

    def on_epoch_end(self, args, state, control, **kwargs):
        self.timeline.mark("epoch_end")


@contextlib.contextmanager
def instrumented(timeline: Timeline, trainers: list) -> Iterator[None]:
    """`medft.training.train` with its phases timed, and the Trainer it builds kept."""
    in_loop = {"now": False}

    def build_trainer(*args: Any, **kwargs: Any):
        trainer = original_build(*args, **kwargs)
        trainer.add_callback(Events(timeline))
        trainer.get_batch_samples = timeline.timed("waiting for batches", trainer.get_batch_samples)
        trainer.evaluate = timeline.timed("per-epoch evaluation", trainer.evaluate)
        trainer._save_checkpoint = timeline.timed("checkpoints", trainer._save_checkpoint)
        trainer.predict = timeline.timed(
            lambda: (
                "train curve: re-scored sample"
                if in_loop["now"]
                else "after training: scoring (calibration, validation, test)"
            ),
            trainer.predict,
        )
        if trainer.running_scores is not None:
            running = trainer.running_scores
            running.metrics = timeline.timed("train curve: running scores", running.metrics)
        train_loop = trainer.train

        def train(*args: Any, **kwargs: Any):
            in_loop["now"] = True
            try:
                return train_loop(*args, **kwargs)
            finally:
                in_loop["now"] = False
                timeline.mark("train_end")

        trainer.train = train
        trainers.append(trainer)
        return trainer

    original_build = medft.training.run.build_trainer
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(medft.training.run, "build_trainer", build_trainer))
        for name, label in [
            ("load_data", "set-up: data"),
            ("build_model", "set-up: model"),
            *AFTER_TRAINING.items(),
        ]:
            function = timeline.timed(label, getattr(medft.training.run, name))
            stack.enter_context(mock.patch.object(medft.training.run, name, function))
        once = timeline.timed(
            "validation preprocessed once", medft.training.trainer.preprocess_once
        )
        stack.enter_context(mock.patch.object(medft.training.trainer, "preprocess_once", once))
        yield


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def steady_steps(timeline: Timeline) -> list[float]:
    """Seconds from one step's end to the next within an epoch (fetch, step, bookkeeping):
    an epoch's first step, which follows the epoch boundary, is left out."""
    ends, starts = timeline.instants["step_end"], timeline.instants["epoch_begin"]
    epoch_of = [sum(start <= end for start in starts) for end in ends]
    return [
        later - earlier
        for earlier, later, first, second in zip(ends, ends[1:], epoch_of, epoch_of[1:])
        if first == second
    ]


def model_alone(trainer, steps: int) -> list[float]:
    """Seconds between step ends of forward, loss, backward, clipping and optimizer step of
    the run's model, loss and optimizer on one batch already on the device."""
    model, args = trainer.model.train(), trainer.args
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrap
    spec, batch = trainer.device_transform.spec, args.per_device_train_batch_size
    pixels = torch.randn(batch, 3, *spec.size, device=args.device)
    labels = torch.randint(0, model.config.num_labels, (batch,), device=args.device)
    precision = torch.bfloat16 if args.bf16 else None

    def step() -> None:
        with torch.autocast(args.device.type, precision, enabled=precision is not None):
            loss = trainer.loss(model(pixel_values=pixels).logits, labels)
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: cuDNN autotuning, the allocator
        step()
    synchronize(args.device)
    ends = [time.perf_counter()]
    for _ in range(steps):
        step()
        ends.append(time.perf_counter())
    synchronize(args.device)
    return [later - earlier for earlier, later in zip(ends, ends[1:])]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def phases(timeline: Timeline, started: float, ended: float) -> dict[str, float]:
    """Seconds per phase; what no phase claims is 'other'."""
    first_step = timeline.instants["step_begin"][0]
    rows = {
        "set-up: data": timeline.total("set-up: data"),
        "set-up: model": timeline.total("set-up: model"),
    }
    rows["set-up: Trainer until the first step"] = (
        first_step - started - rows["set-up: data"] - rows["set-up: model"]
    )
    steps = zip(timeline.instants["step_begin"], timeline.instants["step_end"])
    rows["training steps (forward, backward, optimizer)"] = sum(end - begin for begin, end in steps)
    rows["waiting for batches"] = timeline.total("waiting for batches", after=first_step)
    training_end = timeline.instants["train_end"][0]
    evaluation = timeline.total("per-epoch evaluation", before=training_end)
    once = timeline.total("validation preprocessed once")
    probe = timeline.total("train curve: re-scored sample")
    rows["per-epoch evaluation: validation"] = evaluation - once - probe
    rows["per-epoch evaluation: validation preprocessed once"] = once
    rows["per-epoch evaluation: train curve (re-scored sample)"] = probe
    rows["train curve: running scores"] = timeline.total("train curve: running scores")
    rows["checkpoints"] = timeline.total("checkpoints", before=training_end)
    rows["epoch boundaries (outside evaluation and checkpoints)"] = sum(epoch_gaps(timeline))
    last_step = timeline.instants["step_end"][-1]
    rows["end of the loop (last epoch's boundary, best checkpoint reloaded)"] = (
        training_end - last_step - timeline.within(last_step, training_end, AT_BOUNDARIES)
    )
    rows["after training: scoring (calibration, validation, test)"] = timeline.total(
        "after training: scoring (calibration, validation, test)"
    )
    for label in AFTER_TRAINING.values():
        rows[label] = timeline.total(label)
    rows["other"] = (ended - started) - sum(rows.values())
    return rows


def epoch_gaps(timeline: Timeline) -> list[float]:
    """Per boundary between epochs: last step's end to the next epoch's first step, less the
    evaluation, checkpoint and batch waits in between."""
    ends, begins = timeline.instants["step_end"], timeline.instants["step_begin"]
    gaps = []
    for boundary in timeline.instants["epoch_begin"][1:]:
        before = max(end for end in ends if end < boundary)
        after = min(begin for begin in begins if begin > boundary)
        gaps.append(after - before - timeline.within(before, after, AT_BOUNDARIES))
    return gaps


def recipe(dataset: Path, output: Path, name: str, options: argparse.Namespace) -> dict:
    return {
        "dataset_name": str(dataset),
        "output_dir": str(output),
        "model_name_or_path": f"timm/{name}",
        "pretrained": False,
        "image_size": options.image_size,
        "num_train_epochs": options.epochs,
        "per_device_train_batch_size": options.batch_size,
        "learning_rate": 1e-3,
        "horizontal_flip": 0.5,
        "bf16": options.precision == "bf16",
        "use_cpu": options.device == "cpu",
        "report_to": "none",
        "disable_tqdm": True,
    }


def anatomy(name: str, dataset: Path, work: Path, options: argparse.Namespace) -> dict:
    timeline, trainers = Timeline(), []
    with instrumented(timeline, trainers):
        started = time.perf_counter()
        overrides = [word for key_value in options.set for word in f"--{key_value}".split("=", 1)]
        values = recipe(dataset, work / name, name, options)
        medft.training.train(*parse_recipe(overrides=overrides, values=values))
        ended = time.perf_counter()
    steady = steady_steps(timeline)
    alone = model_alone(trainers[0], options.model_steps)
    rows = phases(timeline, started, ended)
    loop = rows["training steps (forward, backward, optimizer)"] + rows["waiting for batches"]
    epoch_seconds = (loop + rows["epoch boundaries (outside evaluation and checkpoints)"]) / (
        options.epochs
    )
    evaluation = sum(value for key, value in rows.items() if key.startswith("per-epoch"))
    trained = len(trainers[0].train_dataset) * options.epochs
    in_loop = timeline.instants["train_end"][0] - timeline.instants["train_begin"][0]
    return {
        "images_per_second": {
            "whole train()": trained / (ended - started),
            "training loop (Trainer.train)": trained / in_loop,
            "model alone": options.batch_size / statistics.median(alone),
        },
        "phases": rows,
        "total": ended - started,
        "steady_step": {"median": statistics.median(steady), "p90": percentile(steady, 0.9)},
        "model_alone_step": {"median": statistics.median(alone), "p90": percentile(alone, 0.9)},
        "epoch_gap": statistics.mean(epoch_gaps(timeline) or [0.0]),
        "wait_share": wait_share(timeline),
        "evaluation_per_epoch_share": evaluation / options.epochs / epoch_seconds,
    }


def bound_by(wait_share: float, medft_step: float, model_alone_step: float) -> str:
    """What bounds training, from measurements: the loader when waiting for batches takes a
    large share of the loop, the model when medft's step is close to the model alone's."""
    if wait_share >= WAIT_BOUND:
        return "the loader"
    return "the model" if medft_step <= (1 + MODEL_BOUND) * model_alone_step else "overhead"


def wait_share(timeline: Timeline) -> float:
    """Waiting for batches (the first batch, part of the set-up, left out) as a share of the
    training loop's steps and waits."""
    first_step = timeline.instants["step_begin"][0]
    waiting = timeline.total("waiting for batches", after=first_step)
    steps = zip(timeline.instants["step_begin"], timeline.instants["step_end"])
    return waiting / (waiting + sum(end - begin for begin, end in steps))


def report(name: str, result: dict) -> str:
    total = result["total"]
    lines = [f"### {name}", "", "| phase | seconds | share of the run |", "|---|---|---|"]
    for phase, seconds in result["phases"].items():
        lines.append(f"| {phase} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    lines.append(f"| **total** | **{total:.2f}** | 100% |")
    step, alone = result["steady_step"], result["model_alone_step"]
    ratio, gap = step["median"] / alone["median"], result["epoch_gap"]
    speeds = dict(result["images_per_second"])
    alone_speed = speeds.pop("model alone")
    lines += [
        "",
        f"- images/s: model alone {alone_speed:,.0f}; "
        + "; ".join(
            f"{where} {speed:,.0f} ({speed / alone_speed:.2f}x)" for where, speed in speeds.items()
        ),
        f"- steady step, median / p90: medft {1000 * step['median']:.1f} / "
        f"{1000 * step['p90']:.1f} ms, model alone {1000 * alone['median']:.1f} / "
        f"{1000 * alone['p90']:.1f} ms; medft / model alone {ratio:.2f}x",
        f"- epoch-boundary gap (outside evaluation and checkpoints): {1000 * gap:.0f} ms, "
        f"{gap / step['median']:.1f} steady steps",
        f"- per-epoch evaluation: {100 * result['evaluation_per_epoch_share']:.0f}% of an epoch's "
        "training time",
        f"- waiting for batches: {100 * result['wait_share']:.1f}% of the training loop; bound by "
        f"{bound_by(result['wait_share'], step['median'], alone['median'])}",
    ]
    return "\n".join(lines)


def generated_dataset(work: Path, per_class: int, image_size: int) -> Path:
    stored = round(image_size * 8 / 7)
    raw = synthesize_brain_tumor_44c(work / "raw", per_class=per_class, image_size=stored + 32)
    dataset = work / "dataset"
    prepare_dataset(BrainTumorArguments(output=dataset, source=raw, image_size=stored))
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--models", nargs="+", default=["resnet18"], help="timm names")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=12, help="generated scans per class")
    parser.add_argument("--model-steps", type=int, default=30, help="model-alone steps timed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any recipe key, e.g. --set train_metrics_samples=1000 --set eval_cache_gb=0 (the "
        "per-epoch evaluation of earlier releases)",
    )
    options = parser.parse_args()
    if options.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --device cpu")
    work = Path(tempfile.mkdtemp(prefix="medft-anatomy-"))
    dataset = generated_dataset(work, options.per_class, options.image_size)
    device = (
        torch.cuda.get_device_name()
        if options.device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{device}, torch {torch.__version__}; {options.image_size} px, batch "
        f"{options.batch_size}, {options.precision}, {options.epochs} epochs\n"
    )
    results = {}
    for name in options.models:
        results[name] = anatomy(name, dataset, work, options)
        print(report(name, results[name]) + "\n", flush=True)
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
