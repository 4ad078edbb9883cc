"""The wait at epoch boundaries: how long each training step of medft's `train()` waits for its
batch, the first step of an epoch against the others.

    python benchmarks/epoch_boundary.py [--compare-with SRC] [--data-cache none device]
    python benchmarks/epoch_boundary.py --model resnet50 --image-size 224 --stored-size 256 \
        --batch-size 128 --epochs 6 --per-class 42 --workers 15 --bf16   # on a GPU

Each variant trains a timm model (random init; by default ResNet-18 at 64 px, on generated
brain scans prepared at 80 px, 4 epochs of batch 32) in its own process, and times inside the
Trainer each call that takes the next batch (`Trainer.get_batch_samples`) and each step (from
the end of the previous step, or from the epoch's start, to the end of this one). With
``--evaluate`` the recipe's per-epoch evaluation runs between epochs, as it does by default;
without, nothing does. ``--compare-with SRC`` (the ``src`` folder of an earlier medft
checkout, e.g. from ``git archive``) runs that version too (it has no data_cache: its loader
workers only). The table gives medians over the steps after the first epoch: the first step
of an epoch against the others (bar: <= 1.5x), and the whole `train()` call and the Trainer's
own `train_runtime` in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import TRAINING_ONLY

RECIPE = {
    "pretrained": False,
    "learning_rate": 1e-3,
    "report_to": "none",
    "disable_tqdm": True,
    "bootstrap_resamples": 0,
}


def child(dataset: str, output: str, settings: dict) -> None:
    """One training run, timed from inside; prints the timings as one JSON line."""
    import transformers

    import medft.training
    from medft.parsing import parse_recipe

    try:
        import medft.training.build as building  # where build_trainer lives (medft/training/)
    except ImportError:  # --compare-with an earlier medft: one module, medft/training.py
        building = medft.training

    waits, steps = [], []
    taking = transformers.Trainer.get_batch_samples

    def timed_take(self, *args, **kwargs):
        start = time.perf_counter()
        taken = taking(self, *args, **kwargs)
        waits.append((self.state.global_step, time.perf_counter() - start))
        return taken

    class StepTimes(transformers.TrainerCallback):
        last = 0.0

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.last, self.first = time.perf_counter(), True

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            steps.append((state.global_step, self.first, now - self.last))
            self.last, self.first = now, False

    transformers.Trainer.get_batch_samples = timed_take
    callbacks = building.technique_callbacks
    building.technique_callbacks = lambda *a: callbacks(*a) + [StepTimes()]
    recipe = Path(output) / "recipe.json"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(json.dumps(settings))
    start = time.perf_counter()
    medft.training.train(
        *parse_recipe(recipe, ["--dataset_name", dataset, "--output_dir", output + "/model"])
    )
    whole = time.perf_counter() - start
    runtime = json.loads((Path(output) / "model" / "train_results.json").read_text())
    first_of_epoch = {step for step, first, _ in steps if first}
    print(
        json.dumps(
            {
                "waits": waits,
                "steps": steps,
                "first": sorted(first_of_epoch),
                "train": whole,
                "runtime": runtime["train_runtime"],
            }
        )
    )


def summary(name: str, timings: dict) -> str:
    per_epoch = min(timings["first"][1:], default=0) - 1 if len(timings["first"]) > 1 else 0
    later = [(s, first, t) for s, first, t in timings["steps"] if s > per_epoch]
    first_steps = [t for _, first, t in later if first]
    other_steps = [t for _, first, t in later if not first]
    starts = {step - 1 for step in timings["first"]}  # a wait is logged at the step it precedes
    waits = [(s, t) for s, t in timings["waits"] if s >= per_epoch]
    first_waits = [t for s, t in waits if s in starts]
    other_waits = [t for s, t in waits if s not in starts]

    def ms(values):
        return f"{1000 * statistics.median(values):.1f}" if values else "-"

    ratio = statistics.median(first_steps) / statistics.median(other_steps)
    return (
        f"| {name} | {ms(first_waits)} | {ms(other_waits)} | {ms(first_steps)} | "
        f"{ms(other_steps)} | {ratio:.2f}x | {timings['train']:.1f} | {timings['runtime']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-with", type=Path, help="src folder of an earlier medft")
    parser.add_argument("--data-cache", nargs="*", default=["none", "device"])
    parser.add_argument("--model", default="resnet18", help="a timm model name")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--stored-size", type=int, default=80, help="medft prepare --image-size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--evaluate", action="store_true", help="evaluate after each epoch")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        dataset, output, settings = options.child
        child(dataset, output, json.loads(settings))
        return

    from medft.config.prepare import BrainTumorArguments
    from medft.prepare import prepare_dataset
    from medft.prepare.synthetic import synthesize_brain_tumor_44c

    work = Path(tempfile.mkdtemp(prefix="epoch_boundary_"))
    raw = synthesize_brain_tumor_44c(
        work / "raw", per_class=options.per_class, image_size=round(options.stored_size * 1.2)
    )
    dataset = work / "dataset"
    prepare_dataset(BrainTumorArguments(output=dataset, source=raw, image_size=options.stored_size))
    here = Path(__file__).resolve().parent
    variants = [
        (f"data_cache: {cache}", here.parent / "src", cache) for cache in options.data_cache
    ]
    if options.compare_with:
        variants.insert(0, ("before (loader workers)", options.compare_with.resolve(), None))
    settings = (
        RECIPE
        | ({} if options.evaluate else TRAINING_ONLY)
        | {
            "model_name_or_path": f"timm/{options.model}",
            "image_size": options.image_size,
            "num_train_epochs": options.epochs,
            "per_device_train_batch_size": options.batch_size,
            "dataloader_num_workers": options.workers,
            "bf16": options.bf16,
        }
    )
    evaluation = "with" if options.evaluate else "without"
    print(
        f"{options.model} at {options.image_size} px (stored {options.stored_size}), batch "
        f"{options.batch_size}, {options.epochs} epochs, {options.workers} loader worker(s), "
        f"{evaluation} per-epoch evaluation; medians, ms (the model alone beside medft: "
        "step_anatomy.py)\n"
    )
    print(
        "| variant | first wait | other waits | first step | other steps | first / other "
        "| train() s | train_runtime s |\n|---|---|---|---|---|---|---|---|"
    )
    for name, source, cache in variants:
        path = os.pathsep.join([str(source), str(here), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        these = settings | ({"data_cache": cache} if cache else {})
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(dataset),
                   str(work / name.split()[-1]), json.dumps(these)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode:
            sys.exit(result.stderr[-3000:])
        print(summary(name, json.loads(result.stdout.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
