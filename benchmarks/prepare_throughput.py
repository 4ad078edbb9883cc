"""How fast `medft prepare` converts NIH-like PNGs or CT-like DICOMs, next to the floor of
decoding them.

    python benchmarks/prepare_throughput.py --images 20000 --num-proc 2
    python benchmarks/prepare_throughput.py --dicom --images 2000 --num-proc 2 --repeats 3

Generates the files once (in --workdir, reused by later runs), warms the page
cache, then times these at the same process count, ``--repeats`` times each,
interleaved, and reports the medians (a shared machine drifts by 10% or more):

- decode only: Pillow (or pydicom) opens and fully decodes every file in a process pool,
  nothing else;
- `medft prepare chestxray14` storing the original bytes;
- `medft prepare chestxray14 --image-size 256`;
- each of those with ``--near-duplicates off``: no perceptual hash, no near-copy groups (the
  cost of the leakage audit is the difference; bar: at most 15%);
- with ``--dicom``: 512x512 16-bit CT-like slices (HU with Rescale Intercept -1024, a
  soft-tissue window; 20 slices a patient), uncompressed and JPEG 2000 lossless, each
  through pydicom's decoding alone and through `medft prepare dicom` (window, 8-bit PNG).

Each `medft prepare` runs as its own process; its peak RSS is the largest sum,
over the process and its workers, of resident memory sampled every 50 ms
(an overestimate: pages shared between processes are counted once per process).
Bar: prepare >= 0.8x the decode-only rate, peak RSS < 2 GB at 20,000 images.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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

import numpy as np
import psutil
from PIL import Image

from medft.prepare.synthetic import synthesize_chestxray14

REAL_NIH_PNG_NOISE = 0.7  # gives ~380 KB PNGs, the real dataset's average (42 GB / 112,120)
SLICES_PER_PATIENT = 20
DICOM_SYNTAXES = {"uncompressed": None, "JPEG 2000 lossless": "1.2.840.10008.1.2.4.90"}


def decode(path: str) -> None:
    with Image.open(path) as image:
        image.load()


def decode_dicom(path: str) -> None:
    from pydicom.pixels import pixel_array

    pixel_array(path)


def decode_rate(files: list[str], num_proc: int, decoder=decode) -> float:
    """Images per second of decoding alone, in a pool of ``num_proc`` processes."""
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
        for _ in pool.imap(decoder, files, chunksize=8):
            pass
    return len(files) / (time.perf_counter() - start)


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """(RSS, private bytes) summed over the process and its children; private is RSS less
    the file-backed and shared pages (memory-mapped Arrow files the kernel can drop)."""
    rss = private = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            info = member.memory_info()
            rss, private = rss + info.rss, private + info.rss - info.shared
    return rss, private


def run_and_watch(command: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, peak private bytes) of one command's process tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched, peak, peak_private = psutil.Process(process.pid), 0, 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_private
        while not done.is_set():
            try:
                rss, private = tree_memory(watched)
            except psutil.NoSuchProcess:
                return
            peak, peak_private = max(peak, rss), max(peak_private, private)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    return time.perf_counter() - start, peak, peak_private


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


def ct_slice(rng: np.random.Generator, z: float) -> np.ndarray:
    """A 512 x 512 CT-like slice in HU: air, a body of soft tissue, two lungs, a spine."""
    y, x = np.mgrid[-256:256, -256:256].astype(np.float32)
    hu = np.full((512, 512), -1000.0, dtype=np.float32)
    hu[(x / 210) ** 2 + (y / 160) ** 2 < 1] = 40
    for side in (-1, 1):
        hu[((x - side * 95) / 70) ** 2 + (y / (100 + 10 * z)) ** 2 < 1] = -850
    hu[(x**2 + (y - 110) ** 2) < 30**2] = 700
    hu += rng.normal(0, 15, hu.shape)
    return np.clip(hu, -1024, 3071)


def ensure_dicoms(raw: Path, n_files: int, syntax: str | None) -> list[str]:
    """``n_files`` CT-like DICOM slices under raw/<class>/, written once."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    marker = raw / f".complete-{n_files}"
    if not marker.exists():
        shutil.rmtree(raw, ignore_errors=True)
        print(f"generating {n_files} CT-like 512x512 DICOMs in {raw} ...", flush=True)
        template = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
        rng = np.random.default_rng(0)
        for index in range(n_files):
            patient, z = divmod(index, SLICES_PER_PATIENT)
            ds = copy.deepcopy(template)
            ds.Rows = ds.Columns = 512
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.PatientID, ds.SOPInstanceUID = f"P{patient:05d}", generate_uid()
            ds.PixelData = (ct_slice(rng, z / SLICES_PER_PATIENT) + 1024).astype(np.int16).tobytes()
            if syntax:
                ds.compress(syntax)
            path = raw / ("a" if patient % 2 else "b") / f"{index:06d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path)
        marker.touch()
    files = sorted(str(p) for p in raw.glob("*/*.dcm"))
    return files


def run_dicom(args: argparse.Namespace) -> None:
    """Decode only and `medft prepare dicom`, for each transfer syntax, interleaved."""
    output = args.workdir / "prepared-dicom"
    runs: dict[str, tuple[list[str], list[str] | None]] = {}
    for name, syntax in DICOM_SYNTAXES.items():
        raw = args.workdir / f"ct-{name.split()[0].lower()}-{args.images}"
        files = ensure_dicoms(raw, args.images, syntax)
        for path in files:
            Path(path).read_bytes()
        medft = [sys.executable, "-m", "medft.cli", "prepare", "dicom", "--source", str(raw)]
        medft += ["--output", str(output), "--num-proc", str(args.num_proc), "--overwrite"]
        mean_kb = sum(os.path.getsize(f) for f in files) / len(files) / 1024
        runs[f"{name} ({mean_kb:.0f} KB): decode only (pydicom)"] = (files, None)
        runs[f"{name} ({mean_kb:.0f} KB): medft prepare dicom"] = (files, medft)
    rates: dict[str, list[float]] = {label: [] for label in runs}
    peaks: dict[str, int] = {}
    for _ in range(args.repeats):
        for label, (files, command) in runs.items():
            if command is None:
                rates[label].append(decode_rate(files, args.num_proc, decode_dicom))
                continue
            seconds, peak, _ = run_and_watch(command)
            rates[label].append(len(files) / seconds)
            peaks[label] = max(peaks.get(label, 0), peak)
            shutil.rmtree(output)
    cores = f"{args.num_proc} processes; {os.cpu_count()} cores"
    print(f"\n{args.images} DICOM files, 512x512, 16 bits; {cores}")
    print(f"median of {args.repeats} interleaved runs (range in brackets)\n")
    print("| run | images/s | vs decode only | peak RSS |")
    print("|---|---|---|---|")
    for label, values in rates.items():
        floor = statistics.median(rates[label.split(":")[0] + ": decode only (pydicom)"])
        rate = statistics.median(values)
        spread = f" ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else ""
        rss = f"{peaks[label] / 2**20:,.0f} MB" if label in peaks else "-"
        print(f"| {label} | {rate:,.1f}{spread} | {rate / floor:.2f}x | {rss} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each row")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "medft-bench")
    parser.add_argument("--dicom", action="store_true", help="the DICOM rows instead")
    args = parser.parse_args()
    if args.dicom:
        run_dicom(args)
        return

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
        "medft prepare --near-duplicates off": ["--near-duplicates", "off"],
        "medft prepare --image-size 256": ["--image-size", "256"],
        "medft prepare --image-size 256 --near-duplicates off": [
            "--image-size", "256", "--near-duplicates", "off",
        ],
    }  # fmt: skip
    rates: dict[str, list[float]] = {label: [] for label in runs}
    peaks: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so drift of the machine hits every row alike
        for label, extra in runs.items():
            if extra is None:
                rates[label].append(decode_rate(files, args.num_proc))
                continue
            seconds, peak, _ = run_and_watch([*medft, *extra])
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
