"""External validation on real scans: a model trained on one part of the 44c sample, then
met at a "second site" built from the rest, with a known shift.

    python benchmarks/external_real.py                  # the real 44c sample in ../shared/data
    python benchmarks/external_real.py --seeds 42 1 2 --epochs 3 --work /tmp/external_real

The task is the MRI sequence (T1, T1C+, T2: the 44c folder names' second word; normal
scans included), three classes with ~420 images each, so that a site sample of a few
hundred images still holds enough of each class for class-conditional conformal sets.

1. The sample's near-copy groups (pHash within medft's default distance: adjacent slices,
   re-exports) are split 60 / 40 by group, stratified by the 44 folders: part A, the
   model's hospital, and part B, the second site. No image of B has a near copy in A.
2. A is prepared with `medft prepare folder` (train / validation / test, near copies kept
   in one split) and the Lite0 recipe (ImageNet weights from the packaged file) trains on
   it with `conformal: 0.1`: the model keeps its own test scores, the training images'
   feature statistics and its conformal thresholds.
3. B is written twice: as it is ("same scanner") and shifted ("second site": contrast
   lowered to 60% about the mean, gamma 1.4, Gaussian noise of sigma 8 grey levels, and
   resolution cut to 40% and back; two thirds of its T2 scans left out, a prevalence
   shift). Each copy keeps the 44 folder names as its labels, read as the model's three
   through a label map ("Astrocitoma T1" -> T1 ...), and is prepared with its own train /
   validation / test split: train is the site's labelled sample for recalibration, test
   what is reported.
4. `medft evaluate` on the model's own test split, on B as it is and on B shifted (the
   section against the model's own test split, out-of-distribution flags, conformal
   coverage); `medft calibrate` on B shifted's train split (temperature, thresholds,
   conformal sets refitted; once without and once with the prior shift), each evaluated
   on B shifted's test split.

Prints one table per seed and the spread over seeds, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from lite0_weights import lite0_weights_file
from PIL import Image, ImageOps

from medft.cli import main as medft
from medft.formats.image_files import is_image_file
from medft.near_duplicates import DEFAULT_THRESHOLD, hash_values, near_groups, perceptual_hash

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "brain_multiclass_efficientnet_lite0.yaml"
SAMPLE = REPO.parent / "shared" / "data" / "brain-tumor-44c-sample"
SITE_SHARE = 0.4
KEEP_T2 = 1 / 3  # the share of part B's T2 scans the shifted site keeps
ALPHA = 0.1


def sequence_of(folder: str) -> str:
    """The MRI sequence a 44c folder name ends with: T1, T1C+ or T2."""
    return folder.rsplit(" ", 1)[1]


def split_by_group(source: Path, seed: int) -> tuple[list[Path], list[Path]]:
    """Part A and part B: the near-copy groups dealt out 60 / 40 within each folder (a group
    goes with its first file's folder), so no file of one part has a near copy in the other."""
    files = sorted(path for path in source.rglob("*") if path.is_file() and is_image_file(path))
    hashes = []
    for path in files:
        with Image.open(path) as image:
            hashes.append(perceptual_hash(image))
    members: dict[int, list[Path]] = defaultdict(list)
    for path, group in zip(files, near_groups(hash_values(hashes), DEFAULT_THRESHOLD), strict=True):
        members[int(group)].append(path)
    by_folder: dict[str, list[int]] = defaultdict(list)
    for group, paths in members.items():
        by_folder[paths[0].parent.name].append(group)
    rng = random.Random(seed)
    part_a, part_b = [], []
    for folder in sorted(by_folder):
        groups = sorted(by_folder[folder])
        rng.shuffle(groups)
        wanted = round(SITE_SHARE * len(groups))
        for index, group in enumerate(groups):
            (part_b if index < wanted else part_a).extend(members[group])
    return part_a, part_b


def shifted(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The second site's scanner: lower contrast, another gamma, noise, lower resolution."""
    grey = np.asarray(ImageOps.grayscale(image), dtype=np.float32) / 255
    grey = grey.mean() + 0.6 * (grey - grey.mean())
    grey = np.clip(grey, 0, 1) ** 1.4
    grey = grey * 255 + rng.normal(0, 8, grey.shape)
    picture = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    small = (max(1, round(picture.width * 0.4)), max(1, round(picture.height * 0.4)))
    return picture.resize(small, Image.Resampling.BILINEAR).resize(picture.size)


def write_folder(files: list[Path], folder: Path, name_of, change=None, seed: int = 0) -> None:
    """The files as a class-folder tree under ``folder``, each through ``change``."""
    rng = np.random.default_rng(seed)
    for index, path in enumerate(files):
        target = folder / name_of(path.parent.name) / f"{index:05d}{path.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if change is None:
            shutil.copyfile(path, target)
        else:
            with Image.open(path) as image:
                change(image, rng).save(target.with_suffix(".png"))


def sequence_map(files: list[Path], path: Path) -> str:
    """A label map of the 44 folder names among ``files`` onto their sequences."""
    names = sorted({file.parent.name for file in files})
    path.write_text(
        "map:\n" + "".join(f"  {json.dumps(n)}: {json.dumps(sequence_of(n))}\n" for n in names)
    )
    return str(path)


def run(*argv: str) -> None:
    code = medft(list(argv))
    if code:
        sys.exit(f"medft {' '.join(argv)} failed with status {code}")


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def row(report: dict) -> dict:
    """What the table shows of one evaluation's metrics.json."""
    interval = report["confidence_intervals"].get("balanced_accuracy") or {}
    ood = report.get("ood") or {}
    conformal = report.get("conformal") or {}
    return {
        "images": report["images"],
        "balanced_accuracy": report["metrics"]["balanced_accuracy"],
        "ci": [interval.get("low"), interval.get("high")],
        "ece": report["calibration"]["ece"],
        "flagged_ood": ood.get("rate"),
        "coverage": (conformal.get("coverage") or {}).get("value"),
        "mean_set_size": (conformal.get("mean_set_size") or {}).get("value"),
    }


def one_seed(options: argparse.Namespace, seed: int, weights: Path) -> dict:
    work = options.work / f"seed-{seed}"
    part_a, part_b = split_by_group(options.source, seed)
    b_rng = random.Random(seed)
    site_b = [p for p in part_b if sequence_of(p.parent.name) != "T2" or b_rng.random() < KEEP_T2]
    folders = {  # the sites keep the 44 folder names: they are read through a label map
        "hospital": (part_a, sequence_of, None),
        "site_same": (part_b, str, None),
        "site_shifted": (site_b, str, shifted),
    }
    for name, (files, name_of, change) in folders.items():
        if not (work / name / "dataset_dict.json").is_file():
            write_folder(files, work / "raw" / name, name_of, change, seed)
            splits = [] if name == "hospital" else ["--val-size", "0.1", "--test-size", "0.45"]
            run("prepare", "folder", "--source", str(work / "raw" / name),
                "--output", str(work / name), "--seed", str(seed), "--image-size", "256",
                *splits)  # fmt: skip
    maps = {name: sequence_map(files, work / f"{name}_map.yaml")
            for name, (files, _, _) in folders.items()}  # fmt: skip
    model = work / "model"
    if not (model / "metrics.json").is_file():
        run("train", str(RECIPE), "--dataset_name", str(work / "hospital"),
            "--output_dir", str(model), "--pretrained_weights", str(weights),
            "--num_train_epochs", str(options.epochs), "--seed", str(seed),
            "--conformal", str(ALPHA), "--disable_tqdm", "true")  # fmt: skip
    rows = {"own test split (hospital)": row(metrics_of(model))}
    for name, dataset in (
        ("second site, same scanner", "site_same"),
        ("second site, shifted", "site_shifted"),
    ):
        output = work / f"evaluate-{dataset}"
        run("evaluate", "--model", str(model), "--dataset", str(work / dataset),
            "--tune-split", "train", "--output", str(output),
            "--label-map", maps[dataset])  # fmt: skip
        report = metrics_of(output)
        rows[name] = row(report) | {"against_own_test": report.get("against_own_test")}
    for name, extra in (
        ("second site, shifted, recalibrated there", ()),
        ("second site, shifted, recalibrated there with its priors", ("--prior-shift",)),
    ):
        recalibrated = work / ("model-site-priors" if extra else "model-site")
        run("calibrate", "--model", str(model), "--dataset", str(work / "site_shifted"),
            "--tune-split", "train", "--split", "test", "--output", str(recalibrated),
            "--conformal", str(ALPHA), "--label-map", maps["site_shifted"], *extra)  # fmt: skip
        rows[name] = row(metrics_of(recalibrated))
    return rows


def cell(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: dict[str, dict]) -> str:
    lines = ["| evaluated on | images | balanced accuracy (95% CI) | ECE | flagged OOD | "
             f"coverage (target {1 - ALPHA:.2f}) | mean set size |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, values in rows.items():
        low, high = values["ci"]
        lines.append(
            f"| {name} | {values['images']} | {cell(values['balanced_accuracy'])} "
            f"({cell(low)} - {cell(high)}) | {cell(values['ece'])} | "
            f"{cell(values['flagged_ood'], 2)} | {cell(values['coverage'])} | "
            f"{cell(values['mean_set_size'], 2)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SAMPLE, help="Brain Tumor MRI 44c layout")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medft-external-real"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    options = parser.parse_args()
    options.work.mkdir(parents=True, exist_ok=True)
    weights = lite0_weights_file(options.work / "efficientnet_lite0_in1k.safetensors")
    results = {seed: one_seed(options, seed, weights) for seed in options.seeds}
    for seed, rows in results.items():
        print(f"\nSeed {seed} (Lite0 ImageNet, {options.epochs} epochs, MRI sequence task)")
        print(table(rows))
    print("\nBalanced accuracy over seeds (median, min - max):")
    for name in next(iter(results.values())):
        values = [rows[name]["balanced_accuracy"] for rows in results.values()]
        print(f"  {name}: {statistics.median(values):.3f} ({min(values):.3f} - {max(values):.3f})")
    out = options.work / "external_real.json"
    out.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2, default=str))
    print(f"\nWrote {out}")


if __name__ == "__main__":
    main()
