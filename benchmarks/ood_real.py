"""Out-of-distribution flags on real images: a brain MRI model against other modalities,
photographs and chest radiographs.

    nice -n 19 python benchmarks/ood_real.py                # the real 44c sample in ../shared/data
    python benchmarks/ood_real.py --model DIR               # reuse a trained 44c model folder

Trains `recipes/brain_multiclass_efficientnet_lite0.yaml` (the packaged ImageNet
EfficientNet-Lite0 weights, see `lite0_weights.py`) for ``--epochs`` on the real Brain Tumor
MRI 44c sample, prepared by `medft prepare brain-tumor-44c` (near copies grouped into one
split); training saves the out-of-distribution statistics (`medft.inference.ood`: Mahalanobis
distance, threshold set on the validation split for the recipe's ``ood_false_flag_rate``,
5%). A ``--model`` folder without them gets them fitted on the same splits. Then `medft
predict` scores each set and the flag rate is counted:

- the held-out test scans (in distribution), and copies of them with Gaussian noise, at a
  quarter of the resolution, and at twice the contrast (known shifts);
- pydicom's CT and MR test images of at least 64 pixels a side (one file per SOP instance;
  CT_small.dcm, MR_small.dcm ...), its other single-frame images of at least 64 pixels
  (ultrasound, nuclear medicine, secondary capture), and its 16 x 16 CT and MR test slices;
- scikit-learn's two sample photographs, and 64 random 224-pixel crops of them;
- generated chest-radiograph-like images (`medft.prepare.synthetic`): ``../shared/data``
  holds the NIH label table but no NIH images.

Prints a Markdown table and writes it, with the machine and date, as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
from datasets import load_from_disk
from lite0_weights import lite0_weights_file
from PIL import Image
from pydicom.data import get_testdata_files
from sklearn.datasets import load_sample_images

from medft.commands.predict import predict
from medft.config.inference import PredictArguments
from medft.config.prepare import BrainTumorArguments
from medft.inference.ood import OOD_NAME, OodStatistics
from medft.parsing import parse_recipe
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_chestxray14
from medft.training import train
from medft.training.ood_statistics import save_ood_statistics

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "brain_multiclass_efficientnet_lite0.yaml"
SAMPLE = REPO.parent / "shared" / "data" / "brain-tumor-44c-sample"
MIN_SIDE = 64  # pydicom images smaller than this are test patterns, kept apart
CROPS = 64


def trained_model(prepared: Path, weights: Path, output: Path, epochs: int) -> Path:
    overrides = ["--dataset_name", str(prepared), "--output_dir", str(output),
                 "--pretrained_weights", str(weights), "--num_train_epochs", str(epochs),
                 "--disable_tqdm", "true", "--bootstrap_resamples", "0",
                 "--overwrite_output_dir", "true"]  # fmt: skip
    train(*parse_recipe(RECIPE, overrides))
    return output


def with_statistics(model: Path, prepared: Path) -> Path:
    """A reused model folder, with the statistics fitted on the prepared splits if it has none."""
    if not (model / OOD_NAME).is_file():
        splits = load_from_disk(str(prepared))
        save_ood_statistics(
            model,
            splits["train"],
            splits["validation"],
            false_flag_rate=0.05,
            device="cpu",
            batch_size=64,
            num_workers=2,
            seed=42,
        )
    return model


def write_images(images: list[Image.Image], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        paths.append(str(folder / f"{index:04d}.png"))
        image.save(paths[-1])
    return paths


def shifted_test_scans(prepared: Path, work: Path) -> dict[str, list[str]]:
    """The test split's scans with a known shift each, as PNG files."""
    scans = [image.convert("L") for image in load_from_disk(str(prepared))["test"]["image"]]
    rng = np.random.default_rng(0)

    def noisy(image):
        pixels = np.asarray(image, dtype=float) + rng.normal(0, 25, (image.height, image.width))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    def quarter_resolution(image):
        small = image.resize((image.width // 4, image.height // 4), Image.BILINEAR)
        return small.resize(image.size, Image.BILINEAR)

    def contrast(image):
        pixels = np.asarray(image, dtype=float)
        return Image.fromarray(np.clip(2 * pixels - pixels.mean(), 0, 255).astype(np.uint8))

    shifts = {"noise": noisy, "quarter resolution": quarter_resolution, "contrast x2": contrast}
    return {
        name: write_images([shift(scan) for scan in scans], work / "shifted" / name)
        for name, shift in shifts.items()
    }


def pydicom_images() -> dict[str, list[str]]:
    """pydicom's single-frame test images, one file per SOP instance, by kind."""
    found: dict[str, dict[str, str]] = {"ct_mr": {}, "other": {}, "ct_mr_tiny": {}}
    for path in sorted(get_testdata_files()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                frames = int(header.get("NumberOfFrames") or 1)
        except Exception:  # not a DICOM file, or a damaged one (pydicom's tests hold both)
            continue
        if "Rows" not in header or frames != 1 or header.get("Modality") is None:
            continue
        ct_mr = header.Modality in ("CT", "MR")
        large = min(header.Rows, header.Columns) >= MIN_SIDE
        if not ct_mr and (not large or header.Modality not in ("US", "NM", "OT", "CR", "DX")):
            continue
        kind = ("ct_mr" if large else "ct_mr_tiny") if ct_mr else "other"
        found[kind].setdefault(str(header.get("SOPInstanceUID", path)), path)
    return {kind: sorted(paths.values()) for kind, paths in found.items()}


def photographs(work: Path) -> dict[str, list[str]]:
    images = [Image.fromarray(image) for image in load_sample_images().images]
    rng = np.random.default_rng(0)
    crops = []
    for index in range(CROPS):
        image = images[index % len(images)]
        left, top = rng.integers(0, image.width - 224), rng.integers(0, image.height - 224)
        crops.append(image.crop((left, top, left + 224, top + 224)))
    return {
        "photographs": write_images(images, work / "photographs"),
        "crops": write_images(crops, work / "photograph_crops"),
    }


def flag_rate(model: Path, inputs: list[str], output: Path) -> dict:
    """How many of the images (a prepared dataset's test split, or files) are flagged."""
    options = PredictArguments(
        model=[model], inputs=inputs, output=output, num_workers=2, progress=False, ood=True
    )
    summary = predict(options)
    return summary.ood | {"unreadable": len(summary.errors)}


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line]
    return names[0] if names else platform.processor()


def table(rows: dict[str, dict]) -> str:
    lines = ["| set | images scored | flagged | flag rate |", "|---|---|---|---|"]
    for name, row in rows.items():
        rate = "-" if row["rate"] is None else f"{row['rate']:.1%}"
        unreadable = f" (+{row['unreadable']} unreadable)" if row["unreadable"] else ""
        lines.append(f"| {name} | {row['images']}{unreadable} | {row['flagged']} | {rate} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SAMPLE, help="Brain Tumor MRI 44c layout")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medft-ood-real"))
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (2: ~4 min)")
    parser.add_argument("--model", type=Path, help="a trained 44c model folder to reuse")
    options = parser.parse_args()
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / "brain44"
    if not (prepared / "dataset_dict.json").is_file():
        prepare_dataset(BrainTumorArguments(output=prepared, source=options.source, image_size=256))
    if options.model:
        model = with_statistics(options.model, prepared)
    else:
        weights = lite0_weights_file(work / "efficientnet_lite0_in1k.safetensors")
        model = trained_model(prepared, weights, work / "model", options.epochs)
    statistics = OodStatistics.load(model)
    shifted = shifted_test_scans(prepared, work)
    dicom = pydicom_images()
    photos = photographs(work)
    chest = synthesize_chestxray14(work / "chest", n_patients=40, image_size=256)
    sets = {
        "brain MRI 44c, held-out test scans (in distribution)": [str(prepared)],
        "the test scans + Gaussian noise (sd 25)": shifted["noise"],
        "the test scans at 1/4 resolution": shifted["quarter resolution"],
        "the test scans at twice the contrast": shifted["contrast x2"],
        f"pydicom CT and MR test images (>= {MIN_SIDE} px)": dicom["ct_mr"],
        f"pydicom other single-frame images (US, NM, OT; >= {MIN_SIDE} px)": dicom["other"],
        "pydicom 16 x 16 CT and MR test slices": dicom["ct_mr_tiny"],
        "scikit-learn sample photographs": photos["photographs"],
        f"{CROPS} random 224 px crops of them": photos["crops"],
        "generated chest-radiograph-like images": [str(chest)],
    }
    rows = {
        name: flag_rate(model, inputs, work / f"predictions-{index}.csv")
        for index, (name, inputs) in enumerate(sets.items())
    }
    facts = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "epochs": None if options.model else options.epochs,
        "threshold": statistics.threshold,
        "false_flag_rate": statistics.false_flag_rate,
        "training_images": statistics.training_images,
        "validation_images": statistics.validation_images,
        "shrinkage": statistics.shrinkage,
        "test_metrics": json.loads((model / "metrics.json").read_text())["metrics"],
    }
    print(table(rows))
    print(json.dumps(facts, indent=2))
    (work / "ood_real.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2))
    print(f"\nWrote {work / 'ood_real.json'}")


if __name__ == "__main__":
    main()
