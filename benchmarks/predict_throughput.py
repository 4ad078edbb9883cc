"""Images/s of `medft predict` against a plain loop of `pipeline()` calls on the same images.

    python benchmarks/predict_throughput.py --images 512 --repeats 5

Both score the same image files with the same saved model (by default a randomly
initialised timm ResNet-18 at 224x224, saved as `medft train` saves it) on the
same device: medft with its batched, multi-worker loader (`medft.commands.predict`,
what `medft predict` runs), the baseline with one `pipeline("image-classification")`
call per image, as the transformers docs show. The pipeline is built before its
clock starts; medft's time includes loading the model and writing the CSV. medft
runs in fp32 (the scores pipeline() gives), in bf16, and through onnxruntime on the
model `medft export` wrote (fp32, and int8 from `--quantize dynamic`; exported before
any clock starts). They alternate, `--repeats` times each, and the table reports the
median and the range. Bar: medft (fp32) >= 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import pipeline

from medft.commands.export import export_onnx
from medft.commands.predict import predict
from medft.config import ModelArguments
from medft.config.inference import ExportArguments, PredictArguments
from medft.modeling import build_model
from medft.prepare.brain_tumor import CLASSES
from medft.prepare.synthetic import brain_scan
from medft.tasks import TaskInfo


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` generated brain scans as JPEG files, like a folder a user would score."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"scan_{index:05d}.jpg"
        brain_scan(index, CLASSES[index % len(CLASSES)], size).save(path, quality=92)
        paths.append(path)
    return paths


def save_model(folder: Path, architecture: str, image_size: int) -> Path:
    """A randomly initialised classifier over the 44 brain classes, saved like `medft train`."""
    args = ModelArguments(architecture, pretrained=False, image_size=image_size)
    built = build_model(args, TaskInfo(list(CLASSES), multi_label=False))
    built.model.save_pretrained(folder)
    processor = built.family.processing_class(built.processor)  # None: kept in config.json
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def medft_run(
    model: Path, images: list[Path], output: Path, batch: int, workers: int, precision: str = "fp32"
) -> float:
    start = time.perf_counter()
    predict(
        PredictArguments(
            model=[model],
            inputs=images,
            output=output,
            batch_size=batch,
            num_workers=workers,
            precision=precision,
            progress=False,
        )
    )
    return len(images) / (time.perf_counter() - start)


def pipeline_run(classifier, images: list[Path]) -> float:
    start = time.perf_counter()
    for path in images:
        classifier(str(path), top_k=5)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512, help="image files to score")
    parser.add_argument("--image-px", type=int, default=256, help="side of the generated files")
    parser.add_argument("--model", default="timm/resnet18", help="architecture, random weights")
    parser.add_argument("--input-size", type=int, default=224, help="the model's input side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="medft's decoding processes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="medft-predict-bench-"))
    images = write_images(work / "images", args.images, args.image_px)
    model = save_model(work / "model", args.model, args.input_size)
    device = 0 if torch.cuda.is_available() else -1
    classifier = pipeline("image-classification", model=str(model), device=device)
    export_onnx(ExportArguments(model=model, output=work / "fp32" / "model.onnx"))
    export_onnx(
        ExportArguments(model=model, output=work / "int8" / "model.onnx", quantize="dynamic")
    )
    runs = {  # row: (model, precision)
        "medft predict": (model, "fp32"),
        "medft predict --precision bf16": (model, "bf16"),
        "medft predict, ONNX fp32 (onnxruntime)": (work / "fp32" / "model.onnx", "fp32"),
        "medft predict, ONNX int8 (onnxruntime)": (work / "int8" / "model.onnx", "fp32"),
    }
    for saved, precision in runs.values():
        medft_run(
            saved, images[: args.batch_size], work / "warmup.csv", args.batch_size, 0, precision
        )
    pipeline_run(classifier, images[:8])

    rates: dict[str, list[float]] = {"pipeline() per image": []} | {name: [] for name in runs}
    for repeat in range(args.repeats):
        rates["pipeline() per image"].append(pipeline_run(classifier, images))
        for row, (saved, precision) in runs.items():
            output = work / f"predictions-{repeat}.csv"
            rates[row].append(
                medft_run(saved, images, output, args.batch_size, args.workers, precision)
            )
        print({name: [round(r, 1) for r in values] for name, values in rates.items()}, flush=True)

    baseline = statistics.median(rates["pipeline() per image"])
    where = torch.cuda.get_device_name() if device == 0 else "CPU"
    setup = (
        f"{args.model} (random init), {args.input_size}x{args.input_size} inputs, {args.images} "
        f"JPEG files of {args.image_px}x{args.image_px} px, batch {args.batch_size}, "
        f"{args.workers} loader workers, {where}, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} cores; median of {args.repeats} (range)"
    )
    print(f"\n{setup}\n")
    print("| run | images/s | vs pipeline() |")
    print("|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"| {name} | {rate:.1f} ({spread}) | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
