"""Training images/s on one GPU: medft end to end against the model alone on synthetic tensors.

    bash benchmarks/gpu_check.sh                 # on a machine with one CUDA GPU
    python benchmarks/gpu_throughput.py --device cpu --models resnet18 --image-size 32 \
        --batch-size 4 --steps 2 --model-only    # the CPU-only parts, as the tests run them

For each model (random init, bf16 autocast, 224 px): the model-only loop trains on a
batch of random tensors already on the GPU (the ceiling: no decoding, no copies), and
medft trains the same model on generated scans prepared at 256 px, through its whole
pipeline (loader workers, uint8 batches, device-side normalisation, Trainer). The table
gives both rates, their ratio (bar: >= 0.9x), the GPU utilisation during the medft run
(nvidia-smi, sampled), the share of medft's training loop spent waiting for batches
(measured as `step_anatomy.py` does), and what bounds the run, read off those
measurements (`step_anatomy.bound_by`): the loader only when that wait share is large.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import timm
import torch
from common import TRAINING_ONLY
from step_anatomy import Timeline, bound_by, instrumented, wait_share

from medft.config.prepare import BrainTumorArguments
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_brain_tumor_44c

DEFAULT_MODELS = ("resnet50", "vit_base_patch16_224")


def generated_dataset(work: Path, per_class: int) -> Path:
    raw = synthesize_brain_tumor_44c(work / "raw", per_class=per_class, image_size=320)
    dataset = work / "dataset"
    prepare_dataset(BrainTumorArguments(output=dataset, source=raw, image_size=256))
    return dataset


def model_only(name: str, device: str, image_size: int, batch: int, steps: int) -> float:
    """Images per second of forward + backward + step on tensors already on ``device``."""
    model = (
        timm.create_model(name, num_classes=44, img_size=image_size)
        if "vit" in name
        else (timm.create_model(name, num_classes=44))
    )
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels = torch.randn(batch, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 44, (batch,), device=device)
    dtype = torch.bfloat16

    def step() -> None:
        with torch.autocast(torch.device(device).type, dtype):
            loss = torch.nn.functional.cross_entropy(model(pixels), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(max(2, steps // 5)):  # warm-up: cuDNN autotuning, allocator
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Utilisation(threading.Thread):
    """nvidia-smi's GPU utilisation, sampled every half second while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.running = shutil.which("nvidia-smi") is not None

    def run(self) -> None:
        while self.running:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            time.sleep(0.5)

    def stop(self) -> float | None:
        self.running = False
        return statistics.mean(self.samples[2:] or self.samples) if self.samples else None


def medft_end_to_end(
    name: str, dataset: Path, output: Path, image_size: int, batch: int, epochs: int
) -> tuple[float, float | None, float]:
    """Training images/s of `medft.training.train` (loader included), the mean GPU
    utilisation meanwhile, and the share of its training loop spent waiting for batches."""
    from medft.parsing import parse_recipe
    from medft.training import train

    values = {
        "dataset_name": str(dataset),
        "output_dir": str(output),
        "model_name_or_path": f"timm/{name}",
        "pretrained": False,
        "image_size": image_size,
        "bf16": True,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch,
        **TRAINING_ONLY,
        "horizontal_flip": 0.5,
    }
    monitor, timeline = Utilisation(), Timeline()
    monitor.start()
    with instrumented(timeline, trainers=[]):
        train(*parse_recipe(values=values))
    utilisation = monitor.stop()
    rate = json.loads((output / "train_results.json").read_text())["train_samples_per_second"]
    return rate, utilisation, wait_share(timeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="model-only steps measured")
    parser.add_argument("--per-class", type=int, default=60, help="generated scans per class")
    parser.add_argument("--epochs", type=int, default=2, help="medft epochs")
    parser.add_argument("--model-only", action="store_true", help="skip the medft runs")
    options = parser.parse_args()
    if options.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --device cpu for the CPU-only parts")
    work = Path(tempfile.mkdtemp(prefix="medft-gpu-bench-"))
    dataset = generated_dataset(work, options.per_class)
    print(f"generated data: {dataset}")
    device_name = torch.cuda.get_device_name() if options.device == "cuda" else "CPU"
    print(
        f"{device_name}, torch {torch.__version__}, batch {options.batch_size}, "
        f"{options.image_size} px, bf16\n"
    )
    print(
        "| model | model only (img/s) | medft end to end (img/s) | ratio | GPU util. | "
        "waiting for batches | bound by |\n|---|---|---|---|---|---|---|"
    )
    for name in options.models:
        ceiling = model_only(
            name, options.device, options.image_size, options.batch_size, options.steps
        )
        if options.model_only:
            print(f"| {name} | {ceiling:.1f} | - | - | - | - | - |")
            continue
        rate, utilisation, waiting = medft_end_to_end(
            name, dataset, work / name, options.image_size, options.batch_size, options.epochs
        )
        ratio = rate / ceiling
        util = "-" if utilisation is None else f"{utilisation:.0f}%"
        bound = bound_by(waiting, medft_step=1 / rate, model_alone_step=1 / ceiling)
        print(
            f"| {name} | {ceiling:.0f} | {rate:.0f} | {ratio:.2f}x | {util} | "
            f"{100 * waiting:.0f}% | {bound} |"
        )


if __name__ == "__main__":
    main()
