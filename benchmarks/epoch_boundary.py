"""The wait at epoch boundaries: how long each training step of medft's `train()` waits for its
batch, the first step of an epoch against the others.

    python benchmarks/epoch_boundary.py [--compare-with SRC] [--data-cache none device]

Each variant trains timm's ResNet-18 (random init) at 64 px on generated brain scans prepared
at 80 px, 4 epochs of batch 32, in its own process, and times inside the Trainer each call that
takes the next batch (`Trainer.get_batch_samples`) and each step (from the end of the previous
step, or from the epoch's start, to the end of this one). With ``--evaluate`` the recipe's
per-epoch evaluation runs between epochs, as it does by default; without, nothing does.
``--compare-with SRC`` (the ``src`` folder of an earlier medft checkout, e.g. from
``git archive``) runs that version too (it has no data_cache: its loader workers only).
The table gives medians over the steps after the first epoch: the first step of an epoch
against the others (bar: <= 1.5x).
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
    "model_name_or_path": "timm/resnet18",
    "pretrained": False,
    "image_size": 64,
    "num_train_epochs": 4,
    "per_device_train_batch_size": 32,
    "learning_rate": 1e-3,
    "report_to": "none",
    "disable_tqdm": True,
    "bootstrap_resamples": 0,
}


def child(dataset: str, output: str, workers: int, data_cache: str | None, evaluate: bool):
    """One training run, timed from inside; prints the timings as one JSON line."""
    import transformers

    import medft.training
    from medft.parsing import parse_recipe

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
    callbacks = medft.training.technique_callbacks
    medft.training.technique_callbacks = lambda *a: callbacks(*a) + [StepTimes()]
    settings = RECIPE | ({} if evaluate else TRAINING_ONLY)
    settings |= {"dataloader_num_workers": workers}
    if data_cache is not None:
        settings["data_cache"] = data_cache
    recipe = Path(output) / "recipe.json"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(json.dumps(settings))
    medft.training.train(
        *parse_recipe(recipe, ["--dataset_name", dataset, "--output_dir", output + "/model"])
    )
    first_of_epoch = {step for step, first, _ in steps if first}
    print(json.dumps({"waits": waits, "steps": steps, "first": sorted(first_of_epoch)}))


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
        f"{ms(other_steps)} | {ratio:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-with", type=Path, help="src folder of an earlier medft")
    parser.add_argument("--data-cache", nargs="*", default=["none", "device"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--evaluate", action="store_true", help="evaluate after each epoch")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        dataset, output, workers, data_cache = options.child
        child(dataset, output, int(workers), None if data_cache == "-" else data_cache,
              options.evaluate)  # fmt: skip
        return

    from medft.prepare import prepare_dataset
    from medft.prepare.synthetic import synthesize_brain_tumor_44c

    work = Path(tempfile.mkdtemp(prefix="epoch_boundary_"))
    raw = synthesize_brain_tumor_44c(work / "raw", per_class=options.per_class, image_size=96)
    dataset = work / "dataset"
    prepare_dataset("brain-tumor-44c", dataset, source=raw, image_size=80)
    here = Path(__file__).resolve().parent
    variants = [(f"data_cache: {cache}", here.parent / "src", cache)
                for cache in options.data_cache]  # fmt: skip
    if options.compare_with:
        variants.insert(0, ("before (loader workers)", options.compare_with.resolve(), "-"))
    evaluation = "with" if options.evaluate else "without"
    print(f"ResNet-18 at 64 px, batch 32, {options.workers} loader worker(s), CPU, "
          f"{evaluation} per-epoch evaluation; medians, ms\n")  # fmt: skip
    print("| variant | first wait | other waits | first step | other steps | first / other |")
    print("|---|---|---|---|---|---|")
    for name, source, cache in variants:
        env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{here}"}
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(dataset),
                   str(work / name.split()[-1]), str(options.workers), cache]  # fmt: skip
        command += ["--evaluate"] * options.evaluate
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode:
            sys.exit(result.stderr[-3000:])
        print(summary(name, json.loads(result.stdout.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
