"""NIH ChestX-ray14 at full size on one machine: generate, prepare, set up, train.

    python benchmarks/nih_full_scale.py --work /tmp/nih_full            # all 112,120 rows
    python benchmarks/nih_full_scale.py --work /tmp/nih_dry --rows 2000  # a quick dry run

1. Generates the Kaggle layout (`images_001/images` ... `images_012/images`, as many files in
   each folder as Kaggle's copy holds) for the first ``--rows`` rows of NIH's real label
   table, next to the table and the official split lists from ``--labels`` (NIH's own files,
   copied unchanged). Each image is `medft.prepare.synthetic`'s chest radiograph with the
   row's real findings, at ``--image-size`` px, plus a random low-frequency field of its own
   (real radiographs differ from one patient to the next: without it, images with the same
   findings would be near copies and form groups of thousands). Existing files are kept, so
   an interrupted run resumes.
2. Prepares it with `medft prepare chestxray14 --image-size 256` as its own process; the wall
   time, the peak RSS of the process tree (every worker included, sampled every 50 ms), and
   the prepared size on disk.
3. Set-up at several row counts: the first 1/8, 1/4, 1/2 and all rows of each prepared split
   (`--scales`), saved as datasets of their own; for each, one `medft.training.train` run in a
   fresh process, stopped after its first step, with every step of the set-up timed
   (`load_from_disk`, the task, the splits' labels, subgroup attributes, the run record, the
   model, the transforms, the image cache's decision, the loss, the Trainer, the first step),
   and the time from the process's start to the end of its first step.
4. Trains ``--steps`` steps on the full prepared set in a fresh process (timm ResNet-18, random
   init, ``--train-size`` px, batch 32, the recipe defaults otherwise: `data_cache: auto`),
   stopped after the last step (no final evaluation); steps/s after the first step, and the
   peak RSS of the process tree.

Results go to ``WORK/results.json`` (each phase's, kept across runs: a finished phase is not
run again unless ``--again`` names it) and a summary to stdout.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from common import TRAINING_ONLY
from PIL import Image
from prepare_throughput import run_and_watch

from medft.prepare.chestxray14 import FINDINGS, NO_FINDING
from medft.prepare.synthetic import chest_radiograph

LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-chestxray14-labels"
TABLE = "Data_Entry_2017_v2020.csv.gz"
SPLIT_LISTS = ("train_val_list.txt", "test_list.txt")
KAGGLE_FOLDER_SIZES = (4_999, *[10_000] * 10, 7_121)  # images_001 ... images_012: 112,120
FOLDER_ENDS = np.cumsum(KAGGLE_FOLDER_SIZES).tolist()
# the random field: grid points a side, standard deviation in grey levels (6 and 25 left 8,262
# near-copy groups joining two patients among 112,120 images; 8 and 60: none in 4,000)
FIELD_GRID, FIELD_AMPLITUDE = 8, 60.0
NOISE = 2.0  # grey levels of pixel noise: ~35 KB a 256 px PNG
PHASES = ("generate", "prepare", "setup", "train")
MB = 2**20


# 1. generate ---------------------------------------------------------------------------------


def table_rows(labels: Path, rows: int | None) -> tuple[str, list[str]]:
    """The real table's header and its first ``rows`` lines (all when None), unchanged."""
    with gzip.open(labels / TABLE, "rt", encoding="utf-8") as handle:
        header, *lines = handle.read().splitlines()
    return header, lines[:rows] if rows else lines


def image_task(line: str, number: int, root: Path, size: int) -> tuple[str, int, tuple, int]:
    """(path, seed, findings, size) of a table line: the folder Kaggle's copy puts row
    ``number`` in, the row's real findings."""
    name, findings = line.split(",")[:2]
    folder = root / f"images_{bisect.bisect_right(FOLDER_ENDS, number) + 1:03d}" / "images"
    found = () if findings == NO_FINDING else tuple(FINDINGS.index(f) for f in findings.split("|"))
    return str(folder / name), number, found, size


def write_image(task: tuple[str, int, tuple, int]) -> None:
    path, seed, findings, size = task
    rng = np.random.default_rng(seed + 1_000_003)
    grid = rng.normal(0, FIELD_AMPLITUDE, (FIELD_GRID, FIELD_GRID)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR))
    pixels = chest_radiograph(seed, findings, size, NOISE) + field
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    if seed % 1000 == 7:  # a few RGBA files, as in the real data
        image = image.convert("RGBA")
    partial = f"{path}.partial"
    image.save(partial, format="PNG", compress_level=1)
    os.replace(partial, path)


def generate(source: Path, labels: Path, rows: int | None, size: int, workers: int) -> dict:
    header, lines = table_rows(labels, rows)
    names = {line.split(",", 1)[0] for line in lines}
    source.mkdir(parents=True, exist_ok=True)
    settings = {"size": size, "grid": FIELD_GRID, "amplitude": FIELD_AMPLITUDE, "noise": NOISE}
    written = source / "generated.json"
    if written.exists() and json.loads(written.read_text()) != settings:
        sys.exit(f"{source} holds images generated otherwise ({written.read_text()}); delete it.")
    written.write_text(json.dumps(settings))
    with gzip.open(source / TABLE, "wt", encoding="utf-8") as handle:
        handle.write("\n".join([header, *lines]) + "\n")
    for split_list in SPLIT_LISTS:
        listed = (labels / split_list).read_text().split()
        (source / split_list).write_text("\n".join(n for n in listed if n in names) + "\n")
    tasks = [image_task(line, number, source, size) for number, line in enumerate(lines)]
    for folder in {Path(task[0]).parent for task in tasks}:
        folder.mkdir(parents=True, exist_ok=True)
    missing = [task for task in tasks if not os.path.exists(task[0])]
    print(f"generate: {len(tasks):,} rows, {len(missing):,} images to write", flush=True)
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(write_image, missing, chunksize=64), 1):
            if done % 5000 == 0 or done == len(missing):
                rate = done / (time.perf_counter() - start)
                print(f"  {done:,} / {len(missing):,} written, {rate:,.0f}/s", flush=True)
    sizes = [os.path.getsize(task[0]) for task in tasks]
    return {
        "rows": len(tasks),
        "written_now": len(missing),
        "seconds": time.perf_counter() - start,
        "image_size": size,
        "mean_kb": statistics.mean(sizes) / 1024,
        "bytes": sum(sizes),
    }


# 2. prepare ----------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def prepare(source: Path, output: Path, workers: int) -> dict:
    command = [sys.executable, "-m", "medft.cli", "prepare", "chestxray14", "--source"]
    command += [str(source), "--output", str(output), "--image-size", "256"]
    command += ["--num-proc", str(workers), "--overwrite"]
    print(f"prepare: {' '.join(command[1:])}", flush=True)
    seconds, peak, private = run_and_watch(command)
    report = json.loads((output / "prepare_report.json").read_text())
    return {
        "command": "medft prepare chestxray14 --image-size 256 --num-proc " + str(workers),
        "seconds": seconds,
        "peak_rss_mb": peak / MB,
        "peak_private_mb": private / MB,
        "bytes_on_disk": folder_bytes(output),
        "split_sizes": report["counts"],
        "near_duplicates": report.get("near_duplicates", {}).get("after"),
    }


# 3. set-up at several row counts -------------------------------------------------------------


def subset(prepared: Path, scale: float, work: Path) -> Path:
    """The first ``scale`` of each split's rows as a dataset of its own (the report beside)."""
    from datasets import DatasetDict, load_from_disk

    if scale == 1:
        return prepared
    target = work / f"subset-{scale:g}"
    if not (target / "dataset_dict.json").exists():
        full = load_from_disk(str(prepared))
        part = DatasetDict({s: d.select(range(round(scale * len(d)))) for s, d in full.items()})
        part.save_to_disk(str(target))
        shutil.copy(prepared / "prepare_report.json", target / "prepare_report.json")
    return target


def child(
    mode: str, dataset: Path, work: Path, options: argparse.Namespace, data_cache: str = "auto"
) -> dict:
    """One `train()` in a fresh process (its peak RSS watched); what it measured."""
    result = work / f"{mode}-{dataset.name}-{data_cache}.json"
    command = [sys.executable, __file__, "--child", mode, "--dataset", str(dataset)]
    command += ["--data-cache", data_cache]
    command += ["--work", str(work), "--steps", str(options.steps)]
    command += ["--train-size", str(options.train_size), "--json", str(result)]
    seconds, peak, private = run_and_watch(command)
    measured = {
        "process_seconds": seconds,
        "peak_rss_mb": peak / MB,
        "peak_private_mb": private / MB,
    }
    return json.loads(result.read_text()) | measured


def run_child(options: argparse.Namespace) -> None:
    """In the child: `medft.training.train` with its set-up timed, stopped after the first
    step (setup) or after ``--steps`` steps (train)."""
    from setup_timeline import timed_training  # torch and transformers: only in the child

    steps = 1 if options.child == "setup" else options.steps
    values = TRAINING_ONLY | {
        "dataset_name": str(options.dataset),
        "output_dir": str(options.work / f"run-{options.child}"),
        "overwrite_output_dir": True,
        "model_name_or_path": "timm/resnet18",
        "pretrained": False,
        "image_size": options.train_size,
        "per_device_train_batch_size": 32,
        "max_steps": steps,
        "logging_steps": 50,
        "data_cache": options.data_cache,
    }
    result = timed_training(values, steps, psutil.Process().create_time())
    options.json.write_text(json.dumps(result, indent=2) + "\n")


# the report -----------------------------------------------------------------------------------


def summary(results: dict) -> str:
    lines = []
    if "generate" in results:
        g = results["generate"]
        lines.append(
            f"generated: {g['rows']:,} PNGs at {g['image_size']} px, {g['mean_kb']:.0f} KB mean, "
            f"{g['bytes'] / 2**30:.1f} GiB"
        )
    if "prepare" in results:
        p = results["prepare"]
        lines.append(
            f"prepare: {p['seconds']:.0f} s ({results['generate']['rows'] / p['seconds']:.0f} "
            f"images/s), peak RSS {p['peak_rss_mb']:,.0f} MB (private "
            f"{p.get('peak_private_mb', 0):,.0f} MB), {p['bytes_on_disk'] / 2**30:.2f} "
            f"GiB on disk; splits {p['split_sizes']}"
        )
    if "setup" in results:
        runs = results["setup"]["runs"]
        steps = list(next(iter(runs.values()))["steps"])
        rows = {scale: run["rows"] for scale, run in runs.items()}
        lines += ["", "| set-up step | " + " | ".join(f"{r:,} rows" for r in rows.values()) + " |"]
        lines.append("|---" * (len(rows) + 1) + "|")
        for step in steps:
            cells = [f"{runs[s]['steps'][step]:.2f}" for s in runs]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        for key in ("until_first_step", "from_process_start", "peak_rss_mb", "peak_private_mb"):
            lines.append(f"| {key} | " + " | ".join(f"{runs[s][key]:.1f}" for s in runs) + " |")
    for cache, t in results.get("train", {}).items():
        if cache == "load_average":
            continue
        lines.append(
            f"\ntrain (data_cache: {cache}): {t['steps_done']} steps, {t['steps_per_second']:.2f} "
            f"steps/s after the first, peak RSS {t['peak_rss_mb']:,.0f} MB (private "
            f"{t['peak_private_mb']:,.0f} MB); first step {t['from_process_start']:.1f} s after "
            "the process started"
        )
        lines += t["data_cache"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nih_full"))
    parser.add_argument("--labels", type=Path, default=LABELS, help="NIH's table and lists")
    parser.add_argument("--rows", type=int, help="the table's first N rows (default: all)")
    parser.add_argument("--image-size", type=int, default=256, help="generated images, px")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--scales", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1])
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--train-size", type=int, default=64, help="the model's input, px")
    parser.add_argument(
        "--train-caches", nargs="+", default=["auto", "ram"], help="data_cache of each training"
    )
    parser.add_argument("--phases", nargs="+", default=PHASES, choices=PHASES, help="run these")
    parser.add_argument("--again", nargs="*", default=[], choices=PHASES, help="rerun these")
    parser.add_argument("--child", choices=("setup", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-cache", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        run_child(options)
        return

    work, source, prepared = options.work, options.work / "source", options.work / "prepared"
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}

    def phase(name: str, run) -> None:
        if name not in options.phases:
            return
        if name in results and name not in options.again:
            print(f"{name}: done before (results.json); --again {name} reruns it", flush=True)
            return
        load_before = os.getloadavg()
        results[name] = run() | {"load_average": {"before": load_before, "after": os.getloadavg()}}
        results_file.write_text(json.dumps(results, indent=2) + "\n")

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results.setdefault("conditions", {})[started] = {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rows": options.rows,
    }
    phase("generate", lambda: generate(source, options.labels, options.rows, options.image_size,
                                       options.num_proc))  # fmt: skip
    phase("prepare", lambda: prepare(source, prepared, options.num_proc))

    def setup() -> dict:
        runs = {}
        for scale in options.scales:
            dataset = subset(prepared, scale, work)
            print(f"setup: {dataset.name}", flush=True)
            runs[f"{scale:g}"] = child("setup", dataset, work, options)
            print(f"  until the first step {runs[f'{scale:g}']['until_first_step']:.1f} s",
                  flush=True)  # fmt: skip
        print("setup: all rows, data_cache: ram", flush=True)
        try:  # refused in one line when the split does not fit the RAM free now
            runs["1 (data_cache: ram)"] = child("setup", prepared, work, options, "ram")
        except SystemExit as refused:
            print(f"  {refused}", flush=True)
        return {"runs": runs}

    phase("setup", setup)
    phase("train", lambda: {cache: child("train", prepared, work, options, cache)
                            for cache in options.train_caches})  # fmt: skip
    print("\n" + summary(results))


if __name__ == "__main__":
    main()
