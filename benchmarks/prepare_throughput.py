"""How fast `medft prepare` converts NIH-like 1024x1024 PNGs, next to the floor of decoding them.

    python benchmarks/prepare_throughput.py --images 20000 --num-proc 2

Generates the images once (in --workdir, reused by later runs), warms the page
cache, then times three things at the same process count:

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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from PIL import Image

from medft.data.synthetic import synthesize_chestxray14

REAL_NIH_PNG_NOISE = 0.7  # gives ~380 KB PNGs, the real dataset's average (42 GB / 112,120)


def decode(path: str) -> None:
    with Image.open(path) as image:
        image.load()


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
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medft-bench")
    args = parser.parse_args()

    files = ensure_images(args.workdir / f"nih-{args.images}", args.images, args.num_proc)
    mean_kb = sum(os.path.getsize(f) for f in files) / len(files) / 1024
    for path in files:  # warm the page cache so every run reads from memory alike
        Path(path).read_bytes()

    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.num_proc) as pool:
        for _ in pool.imap(decode, files, chunksize=8):
            pass
    floor_rate = len(files) / (time.perf_counter() - start)

    rows = [("decode only (Pillow, no writing)", floor_rate, None)]
    source = args.workdir / f"nih-{args.images}"
    output = args.workdir / "prepared"
    medft = [sys.executable, "-m", "medft.cli", "prepare", "chestxray14", "--source", str(source)]
    medft += ["--output", str(output), "--num-proc", str(args.num_proc), "--overwrite"]
    for label, extra in (
        ("medft prepare", []),
        ("medft prepare --image-size 256", ["--image-size", "256"]),
    ):
        seconds, peak = run_and_watch([*medft, *extra])
        rows.append((label, len(files) / seconds, peak))
        shutil.rmtree(output)

    cpu = f"{os.cpu_count()} cores"
    print(
        f"\n{len(files)} PNGs, 1024x1024, {mean_kb:.0f} KB mean; {args.num_proc} processes; {cpu}\n"
    )
    print("| run | images/s | vs decode only | peak RSS |")
    print("|---|---|---|---|")
    for label, rate, peak in rows:
        rss = f"{peak / 2**20:,.0f} MB" if peak else "-"
        print(f"| {label} | {rate:,.1f} | {rate / floor_rate:.2f}x | {rss} |")


if __name__ == "__main__":
    main()
