"""How fast `medft prepare` converts NIH-like 1024x1024 PNGs, next to the floor of decoding them.

    python benchmarks/prepare_throughput.py --images 20000 --num-proc 2

Generates the images once (in --workdir, reused by later runs), warms the page
cache, then times these at the same process count, ``--repeats`` times each,
interleaved, and reports the medians (a shared machine drifts by 10% or more):

- decode only: Pillow opens and fully decodes every file in a process pool, nothing else;
- `medft prepare chestxray14` storing the original bytes;
- `medft prepare chestxray14 --image-size 256`.

Each `medft prepare` runs as its own process; its peak RSS is the largest sum,
over the process and its workers, of resident memory sampled every 50 ms
(an overestimate: pages shared between processes are counted once per process).
Bar: prepare >= 0.8x the decode-only rate, peak RSS < 2 GB at 20,000 images.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from PIL import Image

from medft.prepare.synthetic import synthesize_chestxray14

REAL_NIH_PNG_NOISE = 0.7  # gives ~380 KB PNGs, the real dataset's average (42 GB / 112,120)


def decode(path: str) -> None:
    with Image.open(path) as image:
        image.load()


def decode_rate(files: list[str], num_proc: int) -> float:
    """Images per second of decoding alone, in a pool of ``num_proc`` processes."""
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
        for _ in pool.imap(decode, files, chunksize=8):
            pass
    return len(files) / (time.perf_counter() - start)


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def run_and_watch(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the process tree) of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched, peak = psutil.Process(process.pid), 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    return time.perf_counter() - start, peak


def ensure_images(raw: Path, n_images: int, num_proc: int) -> list[str]:
    marker = raw / f".complete-{n_images}"
    if not marker.exists():
        shutil.rmtree(raw, ignore_errors=True)
        print(f"generating ~{n_images} NIH-like 1024x1024 PNGs in {raw} ...", flush=True)
        synthesize_chestxray14(
            raw,
            n_patients=n_images // 2 + n_images // 50,  # 1-3 follow-ups each, >= n_images in all
            image_size=1024,
            noise=REAL_NIH_PNG_NOISE,
            num_proc=num_proc,
        )
        marker.touch()
    files = sorted(str(p) for p in raw.glob("images_*/images/*.png"))
    if len(files) < n_images:
        sys.exit(f"{raw} holds {len(files)} images, fewer than --images {n_images}; delete it.")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each row")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medft-bench")
    args = parser.parse_args()

    files = ensure_images(args.workdir / f"nih-{args.images}", args.images, args.num_proc)
    mean_kb = sum(os.path.getsize(f) for f in files) / len(files) / 1024
    for path in files:  # warm the page cache so every run reads from memory alike
        Path(path).read_bytes()

    source = args.workdir / f"nih-{args.images}"
    output = args.workdir / "prepared"
    medft = [sys.executable, "-m", "medft.cli", "prepare", "chestxray14", "--source", str(source)]
    medft += ["--output", str(output), "--num-proc", str(args.num_proc), "--overwrite"]
    runs = {
        "decode only (Pillow, no writing)": None,
        "medft prepare": [],
        "medft prepare --image-size 256": ["--image-size", "256"],
    }
    rates: dict[str, list[float]] = {label: [] for label in runs}
    peaks: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so drift of the machine hits every row alike
        for label, extra in runs.items():
            if extra is None:
                rates[label].append(decode_rate(files, args.num_proc))
                continue
            seconds, peak = run_and_watch([*medft, *extra])
            rates[label].append(len(files) / seconds)
            peaks[label] = max(peaks.get(label, 0), peak)
            shutil.rmtree(output)
    floor_rate = statistics.median(rates["decode only (Pillow, no writing)"])
    rows = [(label, values, peaks.get(label)) for label, values in rates.items()]

    cpu = f"{os.cpu_count()} cores"
    print(
        f"\n{len(files)} PNGs, 1024x1024, {mean_kb:.0f} KB mean; {args.num_proc} processes; {cpu}\n"
    )
    print(f"median of {args.repeats} interleaved runs (range in brackets)\n")
    print("| run | images/s | vs decode only | peak RSS |")
    print("|---|---|---|---|")
    for label, values, peak in rows:
        rate = statistics.median(values)
        spread = f" ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else ""
        rss = f"{peak / 2**20:,.0f} MB" if peak else "-"
        print(f"| {label} | {rate:,.1f}{spread} | {rate / floor_rate:.2f}x | {rss} |")


if __name__ == "__main__":
    main()
