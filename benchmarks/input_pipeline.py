"""The training input pipeline: medft's loader against the floor of the same work, and the CPU
time a training run spends in the kernel.

    python benchmarks/input_pipeline.py --repeats 3

1. **Loader alone** (no model): batches of 224 px training crops from a dataset prepared
   at 256 px, stored as JPEG and as PNG, with medft's loader (its `DataLoader`, transforms and
   collate, uint8 batches, one worker) against a bare loop doing the same work in one
   process (decode with Pillow, RandomResizedCrop + horizontal flip with torchvision, stack).
   Bar: medft's images/s per worker core >= 0.8x the bare loop's. The CPU time per image is
   what a GPU host must provide: it is printed with what it implies on 16 cores.
2. **Training, end to end** (EfficientNet-Lite0, random init, 224 px, on the CPU): medft
   against a bare PyTorch loop over the same model, data and transforms, each as its own
   process, with the user and system CPU time of the whole process tree (loader workers
   included). medft also runs once with torch's default threads in its loader workers (the
   one-thread rule of `use_one_thread_in_workers` switched off), to show the kernel time that
   rule removes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Image as ImageFeature
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from medft.config import DataArguments
from medft.data.loading import load_training_data
from medft.data.transforms import InputSpec, batch_transform, collate, train_pixels
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_brain_tumor_44c

SIZE = 224
SPEC = InputSpec((SIZE, SIZE), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
AUGMENT = DataArguments("unused", horizontal_flip=0.5)
GPU_HOST_CORES = 16


def prepared_datasets(work: Path, per_class: int) -> dict[str, Path]:
    """The same generated scans prepared at 256 px, stored as JPEG (as generated) and as PNG."""
    jpeg_raw = synthesize_brain_tumor_44c(work / "raw256", per_class=per_class, image_size=256)
    big_raw = synthesize_brain_tumor_44c(work / "raw384", per_class=per_class, image_size=384)
    jpeg, png = work / "jpeg", work / "png"
    prepare_dataset("brain-tumor-44c", jpeg, source=jpeg_raw)
    prepare_dataset("brain-tumor-44c", png, source=big_raw, image_size=256)  # re-encoded: PNG
    return {"JPEG": jpeg, "PNG": png}


def medft_loader(dataset: Path, workers: int) -> float:
    """Images per second through medft's training loader (one epoch, uint8 batches)."""
    data, task = load_training_data(str(dataset))
    train = data["train"]
    train.set_transform(batch_transform(train_pixels(SPEC, AUGMENT), task))
    loader = DataLoader(
        train,
        batch_size=32,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    iterator = iter(loader)
    first = next(iterator)  # workers started, first batch in: the clock starts
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch["pixel_values"])
    assert first["pixel_values"].dtype == torch.uint8
    return count / (time.perf_counter() - start)


def bare_loop(dataset: Path) -> float:
    """Images per second of the same work in one process: decode, crop, flip, stack."""
    data, _ = load_training_data(str(dataset))
    stored = data["train"].cast_column("image", ImageFeature(decode=False))
    crop = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop((SIZE, SIZE), scale=(0.8, 1.0)),
            v2.RandomHorizontalFlip(0.5),
        ]
    )
    torch.set_num_threads(1)
    rows = stored["image"]
    start = time.perf_counter()
    for begin in range(0, len(rows), 32):
        images = [
            Image.open(io.BytesIO(row["bytes"])).convert("RGB") for row in rows[begin : begin + 32]
        ]
        torch.stack([crop(image) for image in images])
    return len(rows) / (time.perf_counter() - start)


TRAIN_CHILD = """
import json, sys, time
from medft.parsing import parse_recipe
from medft.training import train
if sys.argv[2] == "default-threads":
    import medft.data.transforms as transforms
    transforms.use_one_thread_in_workers = lambda: None
values = json.loads(sys.argv[1])
start = time.perf_counter()
train(*parse_recipe(values=values))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

BARE_CHILD = """
import json, sys, time, torch
from torch.utils.data import DataLoader
from transformers import Trainer, set_seed
from medft.data.loading import load_training_data
from medft.data.transforms import (DeviceTransform, batch_transform, collate, input_spec,
                                   train_pixels)
from medft.modeling import build_model
from medft.parsing import parse_recipe
values = json.loads(sys.argv[1])
data_args, model_args, args = parse_recipe(values=values)
set_seed(args.seed)
data, task = load_training_data(values["dataset_name"])
built = build_model(model_args, task)
model = built.model.to(memory_format=torch.channels_last)
spec = input_spec(built.processor)
train = data["train"]
train.set_transform(batch_transform(train_pixels(spec, data_args), task))
loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=args.dataloader_num_workers,
                    collate_fn=collate)
on_device = DeviceTransform(spec)
optimizer_class, settings = Trainer.get_optimizer_cls_and_kwargs(args, model)
optimizer = optimizer_class(model.parameters(), **settings)
model.train()
start = time.perf_counter()
for _ in range(int(args.num_train_epochs)):
    for batch in loader:
        loss = model(pixel_values=on_device(batch["pixel_values"]), labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def timed_child(script: str, values: dict, mode: str) -> dict[str, float]:
    """Wall, user and system seconds of a child process and everything it started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(values), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    loop = json.loads(result.stdout.strip().splitlines()[-1])["seconds"]
    return {
        "wall": wall,
        "loop": loop,
        "user": after.ru_utime - before.ru_utime,
        "system": after.ru_stime - before.ru_stime,
    }


def median_range(values: list[float], digits: int = 1) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=20, help="generated scans per class")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-per-class", type=int, default=8)
    parser.add_argument("--skip-training", action="store_true")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medft-input-bench-"))
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    prepared = prepared_datasets(work, options.per_class)
    print(
        "| stored as | bare loop, 1 process | medft loader, 1 worker | ratio | "
        "CPU ms / image | 16-core host (15 workers) |\n|---|---|---|---|---|---|"
    )
    for kind, dataset in prepared.items():
        bare, medft = [], []
        for _ in range(options.repeats):  # interleaved: the machine is shared and drifts
            bare.append(bare_loop(dataset))
            medft.append(medft_loader(dataset, workers=1))
        ratio = statistics.median(medft) / statistics.median(bare)
        per_image = 1000 / statistics.median(bare)
        host = (GPU_HOST_CORES - 1) * statistics.median(medft)
        print(
            f"| {kind} | {median_range(bare)} img/s | {median_range(medft)} img/s | "
            f"{ratio:.2f}x | {per_image:.2f} | ~{host:,.0f} img/s |"
        )

    if options.skip_training:
        return
    raw = synthesize_brain_tumor_44c(
        work / "train_raw", per_class=options.train_per_class, image_size=256
    )
    dataset = work / "train"
    prepare_dataset("brain-tumor-44c", dataset, source=raw)
    values = {
        "dataset_name": str(dataset),
        "output_dir": str(work / "out"),
        "model_name_or_path": "timm/efficientnet_lite0",
        "pretrained": False,
        "image_size": SIZE,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 32,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "train_metrics_samples": 0,
        "test_split": "",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 2,
        "horizontal_flip": 0.5,
    }
    runs = {"bare PyTorch loop": [], "medft": [], "medft, torch's default threads in workers": []}
    for repeat in range(options.repeats):
        values["output_dir"] = str(work / f"out-{repeat}")
        runs["bare PyTorch loop"].append(timed_child(BARE_CHILD, values, "-"))
        runs["medft"].append(timed_child(TRAIN_CHILD, values, "one-thread"))
        values["output_dir"] = str(work / f"out-default-{repeat}")
        runs["medft, torch's default threads in workers"].append(
            timed_child(TRAIN_CHILD, values, "default-threads")
        )
    n = len(load_training_data(str(dataset))[0]["train"])
    print(
        f"\nTraining EfficientNet-Lite0 (random init) at {SIZE} px on {n} images, 1 epoch, "
        f"2 loader workers, median of {options.repeats} (range):\n"
    )
    print(
        "| run | images/s (training loop) | user s | system s | system share |\n"
        "|---|---|---|---|---|"
    )
    for name, results in runs.items():
        rates = [n / r["loop"] for r in results]
        user, system = [r["user"] for r in results], [r["system"] for r in results]
        share = statistics.median(s / (u + s) for u, s in zip(user, system))
        print(
            f"| {name} | {median_range(rates)} | {median_range(user, 0)} | "
            f"{median_range(system, 0)} | {share:.0%} |"
        )


if __name__ == "__main__":
    main()
