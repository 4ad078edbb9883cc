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
   included); medft's images/s come from the Trainer's own `train_runtime` (the training
   loop, as the bare loop times its own), so start-up, the final save and evaluation count
   in the CPU time but not in the rate. medft also runs once with torch's default threads in
   its loader workers (the one-thread rule of `use_one_thread_in_workers` switched off), and,
   with ``--compare-with SRC`` (the ``src`` folder of an earlier medft checkout, e.g. a git
   worktree of the release before this pipeline), once as that version, to show the kernel
   time the change removed.
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
from common import TRAINING_ONLY
from datasets import Image as ImageFeature
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from medft.config import DataArguments
from medft.config.prepare import BrainTumorArguments
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
    prepare_dataset(BrainTumorArguments(output=jpeg, source=jpeg_raw))
    prepare_dataset(
        BrainTumorArguments(output=png, source=big_raw, image_size=256)
    )  # re-encoded: PNG
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
import json, sys
from pathlib import Path
if sys.argv[2] == "earlier":  # --compare-with: that medft's parser lived in medft.config
    from medft.config import parse_recipe
else:
    from medft.parsing import parse_recipe
from medft.training import train
if sys.argv[2] == "default-threads":
    import medft.data.transforms as transforms
    transforms.use_one_thread_in_workers = lambda: None
values = json.loads(sys.argv[1])
train(*parse_recipe(values=values))
metrics = json.loads((Path(values["output_dir"]) / "train_results.json").read_text())
print(json.dumps({"seconds": metrics["train_runtime"]}))
"""

BARE_CHILD = """
import json, sys, time, torch
from torch.utils.data import DataLoader
from transformers import Trainer, set_seed
from medft.data.loading import load_training_data
from medft.data.transforms import DeviceTransform, batch_transform, collate, train_pixels
from medft.modeling import build_model
from medft.parsing import parse_recipe
values = json.loads(sys.argv[1])
data_args, model_args, args = parse_recipe(values=values)
set_seed(args.seed)
data, task = load_training_data(values["dataset_name"])
built = build_model(model_args, task)
model = built.model.to(memory_format=torch.channels_last)
spec = built.family.input_spec(built.processor)
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


def timed_child(
    script: str, values: dict, mode: str, source: Path | None = None
) -> dict[str, float]:
    """Wall, user and system seconds of a child process and everything it started; ``source``:
    the medft source tree it imports instead of the installed one."""
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(values), mode],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode:
        raise SystemExit(f"the {mode} child failed:\n{result.stderr[-3000:]}")
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
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument(
        "--compare-with", type=Path, help="src folder of an earlier medft: one more training row"
    )
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medft-input-bench-"))
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    if not options.skip_loader:
        loader_rows(work, options.per_class, options.repeats)
    if not options.skip_training:
        training_rows(work, options)


def loader_rows(work: Path, per_class: int, repeats: int) -> None:
    prepared = prepared_datasets(work, per_class)
    print(
        "| stored as | bare loop, 1 process | medft loader, 1 worker | ratio | "
        "CPU ms / image | 16-core host (15 workers) |\n|---|---|---|---|---|---|"
    )
    for kind, dataset in prepared.items():
        bare, medft = [], []
        for _ in range(repeats):  # interleaved: the machine is shared and drifts
            bare.append(bare_loop(dataset))
            medft.append(medft_loader(dataset, workers=1))
        ratio = statistics.median(medft) / statistics.median(bare)
        per_image = 1000 / statistics.median(bare)
        host = (GPU_HOST_CORES - 1) * statistics.median(medft)
        print(
            f"| {kind} | {median_range(bare)} img/s | {median_range(medft)} img/s | "
            f"{ratio:.2f}x | {per_image:.2f} | ~{host:,.0f} img/s |"
        )


def training_rows(work: Path, options: argparse.Namespace) -> None:
    raw = synthesize_brain_tumor_44c(
        work / "train_raw", per_class=options.train_per_class, image_size=256
    )
    dataset = work / "train"
    prepare_dataset(BrainTumorArguments(output=dataset, source=raw))
    values = {
        "dataset_name": str(dataset),
        "output_dir": str(work / "out"),
        "model_name_or_path": "timm/efficientnet_lite0",
        "pretrained": False,
        "image_size": SIZE,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 32,
        **TRAINING_ONLY,
        "dataloader_num_workers": 2,
        "horizontal_flip": 0.5,
    }
    children = {
        "bare PyTorch loop": (BARE_CHILD, "-", None),
        "medft": (TRAIN_CHILD, "one-thread", None),
        "medft, torch's default threads in workers": (TRAIN_CHILD, "default-threads", None),
    }
    if options.compare_with:
        children[f"medft at {options.compare_with}"] = (
            TRAIN_CHILD,
            "earlier",
            options.compare_with,
        )
    runs = {name: [] for name in children}
    for repeat in range(options.repeats):
        for index, (name, (script, mode, source)) in enumerate(children.items()):
            values["output_dir"] = str(work / f"out-{repeat}-{index}")
            runs[name].append(timed_child(script, values, mode, source))
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
