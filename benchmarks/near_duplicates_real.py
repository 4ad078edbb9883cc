"""Near copies in the real brain MRI sample: how medft's threshold was chosen, and what it does.

Reads the real 1,266-image sample of Brain Tumor MRI 44c (``../shared/data``), hashes every
image with medft's pHash, and reports:

- the distribution of Hamming distances between all pairs of images, and how many pairs at
  each threshold join two different tumour types (different patients: false groups);
- the distance of near copies made of 400 of the images (resized to 80%, JPEG quality 70
  with 3 pixels cropped, greyscale) to their originals (what the threshold must catch);
- ``medft prepare brain-tumor-44c`` with near-copy groups and without (``--near-duplicates
  off``, the split of earlier releases): test and validation images with a near copy in train;

and draws pairs at and beyond the threshold, for a person to judge, into
``--figures`` (default docs/images). Run from the repository root:

    python benchmarks/near_duplicates_real.py --output /tmp/near-copies
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medft.config.prepare import BrainTumorArguments
from medft.near_duplicates import hash_values, near_pairs, perceptual_hash
from medft.prepare import prepare_dataset
from medft.prepare.leakage import draw_contact_sheet, grey_if_grey

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-44c-sample"
COPIES = 400
SHOWN_DISTANCES = (2, 4, 6, 8)


def copies(image: Image.Image) -> dict[str, Image.Image]:
    width, height = image.size
    encoded = io.BytesIO()
    image.convert("RGB").crop((3, 3, width - 3, height - 3)).save(encoded, "JPEG", quality=70)
    return {
        "resized to 80%": image.resize((int(width * 0.8), int(height * 0.8))),
        "JPEG 70, 3 px cropped": Image.open(encoded),
        "greyscale": image.convert("L"),
    }


def tumour(relative: str) -> str:
    return relative.split("/")[0].rsplit(" ", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SAMPLE)
    parser.add_argument("--output", type=Path, required=True, help="scratch folder")
    parser.add_argument("--figures", type=Path, default=Path("docs/images"))
    args = parser.parse_args()

    paths = sorted(p for p in args.source.rglob("*") if p.is_file())
    names = [p.relative_to(args.source).as_posix() for p in paths]
    images = [Image.open(p) for p in paths]
    started = time.perf_counter()
    values = hash_values([perceptual_hash(image) for image in images])
    per_image = (time.perf_counter() - started) / len(paths) * 1000
    pairs = near_pairs(values, 16)
    kinds = np.array([tumour(name) for name in names])
    across = kinds[pairs[:, 0]] != kinds[pairs[:, 1]]
    results = {
        "images": len(paths),
        "hash_ms_per_image_with_decode": round(per_image, 2),
        "pairs_by_distance": np.bincount(pairs[:, 2], minlength=17).tolist(),
        "pairs_joining_two_tumour_types": {
            d: int((across & (pairs[:, 2] <= d)).sum()) for d in range(0, 17, 2)
        },
    }
    chosen = np.random.default_rng(1).choice(len(paths), COPIES, replace=False)
    found: dict[str, list[int]] = {}
    for index in chosen:
        for kind, copy in copies(images[index]).items():
            gap = int(np.bitwise_count(hash_values([perceptual_hash(copy)])[0] ^ values[index]))
            found.setdefault(kind, []).append(gap)
    results["copies_distance_counts"] = {k: np.bincount(v).tolist() for k, v in found.items()}

    for label, setting in (("grouped", "4"), ("without_groups", "off")):
        report = prepare_dataset(
            BrainTumorArguments(
                output=args.output / label,
                source=args.source,
                near_duplicates=setting,
                overwrite=True,
            )
        )
        results[label] = {"counts": report["counts"], "near_duplicates": report["near_duplicates"]}

    rows = []
    rng = np.random.default_rng(0)
    for distance in SHOWN_DISTANCES:
        at = np.flatnonzero(pairs[:, 2] == distance)
        shown = []
        for pick in rng.choice(at, size=min(4, len(at)), replace=False):
            for index in pairs[pick, :2]:
                thumbnail = images[index].convert("RGB")
                thumbnail.thumbnail((128, 128))
                shown.append((grey_if_grey(thumbnail), names[index].split("/")[0]))
        rows.append((f"{distance} bits apart (pairs side by side)", shown))
    args.figures.mkdir(parents=True, exist_ok=True)
    draw_contact_sheet(rows, args.figures / "near_copy_distances_brain44.png")
    sheet = args.output / "grouped" / "near_duplicates.png"
    (args.figures / "near_duplicates_brain44.png").write_bytes(sheet.read_bytes())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
