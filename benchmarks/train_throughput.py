"""Training images/s of medft against a bare PyTorch loop doing the same work.

    python benchmarks/train_throughput.py --epochs 2 --repeats 3

Both train the same model (built by `medft.modeling.build_model` from the same
arguments and seed) on the same generated brain-layout dataset, with the same
batch size, data loader workers, transforms, optimizer (the one `Trainer` picks),
linear schedule and gradient clipping. medft runs `medft.training.train`
with evaluation and checkpoints off, so the comparison is the training loop;
its time is the Trainer's own `train_runtime`. The two alternate, `--repeats`
times each, and the table reports the median. Bar: medft's overhead <= 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import TRAINING_ONLY
from torch.utils.data import DataLoader
from transformers import Trainer, get_linear_schedule_with_warmup, set_seed

from medft.config.prepare import BrainTumorArguments
from medft.data.loading import load_training_data
from medft.data.transforms import (
    DeviceTransform,
    batch_transform,
    collate,
    train_pixels,
)
from medft.modeling import build_model
from medft.parsing import parse_recipe
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_brain_tumor_44c
from medft.training import train

RECIPE = {
    "model_name_or_path": "timm/resnet18",
    "pretrained": False,
    "image_size": 64,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 32,
    **TRAINING_ONLY,
}


def medft_run(dataset: Path, output: Path, epochs: int, workers: int) -> float:
    """Images per second of `medft.training.train`'s training loop."""
    values = {
        **RECIPE,
        "dataset_name": str(dataset),
        "output_dir": str(output),
        "num_train_epochs": epochs,
        "dataloader_num_workers": workers,
    }
    train(*parse_recipe(values=values))
    metrics = json.loads((output / "train_results.json").read_text())
    return metrics["train_samples_per_second"]


def bare_run(dataset: Path, epochs: int, workers: int) -> float:
    """Images per second of a plain PyTorch loop over the same model, data and transforms."""
    values = {**RECIPE, "dataset_name": str(dataset), "output_dir": "unused"}
    data_args, model_args, args = parse_recipe(values=values)
    set_seed(args.seed)
    data, task = load_training_data(str(dataset))
    built = build_model(model_args, task)
    model, processor = built.model, built.processor
    train_set = data["train"]
    spec = built.family.input_spec(processor)
    train_set.set_transform(batch_transform(train_pixels(spec, data_args), task))
    on_device = DeviceTransform(spec, data_args.random_erasing)
    loader = DataLoader(
        train_set,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=workers,
        drop_last=False,
    )
    optimizer_class, optimizer_settings = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_class(model.parameters(), **optimizer_settings)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, epochs * len(loader))
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            loss = model(pixel_values=on_device(batch["pixel_values"]), labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    return epochs * len(train_set) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=50, help="generated scans per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="dataloader_num_workers")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="medft-train-bench-"))
    raw = synthesize_brain_tumor_44c(work / "raw", per_class=args.per_class, image_size=96)
    report = prepare_dataset(BrainTumorArguments(output=work / "dataset", source=raw))
    rates: dict[str, list[float]] = {"bare PyTorch loop": [], "medft (Trainer)": []}
    for repeat in range(args.repeats):
        rates["bare PyTorch loop"].append(bare_run(work / "dataset", args.epochs, args.workers))
        output = work / f"medft-{repeat}"
        rates["medft (Trainer)"].append(
            medft_run(work / "dataset", output, args.epochs, args.workers)
        )
        print({name: [round(r, 1) for r in values] for name, values in rates.items()}, flush=True)

    bare = statistics.median(rates["bare PyTorch loop"])
    print(
        f"\ntimm resnet18 (random init), 64x64 inputs, batch 32, {report['counts']['train']} "
        f"training images x {args.epochs} epochs, {args.workers} loader workers, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores; median of "
        f"{args.repeats}\n"
    )
    print("| loop | images/s | vs bare loop |")
    print("|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.1f} | {rate / bare - 1:+.1%} |")


if __name__ == "__main__":
    main()
