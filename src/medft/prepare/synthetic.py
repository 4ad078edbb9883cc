"""Small fake datasets in the exact on-disk layouts of the two reference datasets.

The pictures carry class-dependent patterns that a small model learns in a
few epochs, and the files carry the real downloads' quirks (mixed extensions
and modes, a screenshot, byte-identical copies, system files; for NIH the
trailing-comma table, bracketed headers, impossible ages, RGBA files, split
lists without a header). Tests, the demo and the benchmarks use them; nothing
is downloaded.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medft.config.prepare import SynthesizeBrainArguments, SynthesizeChestArguments
from medft.prepare.brain_tumor import CLASSES, NORMAL_CLASSES, TUMOR_TYPES
from medft.prepare.chestxray14 import FINDINGS

BRAIN_EXTENSIONS = (".jpeg", ".jpeg", ".jpg", ".jpeg", ".jpg", ".JPG")  # ~ the real mix
LESION_TEXTURES = ("solid", "ring", "stripes", "dots", "dark")
LESION_RADII = (0.07, 0.11, 0.15)  # as a fraction of the image side


def head_background(rng: np.random.Generator, size: int, sequence: str) -> np.ndarray:
    """An axial-slice-like ellipse whose contrast depends on the MRI sequence."""
    y, x = np.mgrid[0:size, 0:size] / size
    cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03)
    r = ((x - cx) / 0.38) ** 2 + ((y - cy) / 0.44) ** 2
    brain, rim, csf = {"T1": (110, 170, 40), "T1C+": (120, 200, 45), "T2": (70, 90, 210)}[sequence]
    image = np.where(r < 1.0, brain, 8.0)
    image = np.where((r >= 0.82) & (r < 1.0), rim, image)
    image = np.where(r < 0.05, csf, image)  # ventricles
    return image + rng.normal(0, 6, (size, size))


def draw_lesion(rng: np.random.Generator, image: np.ndarray, tumor_index: int, sequence: str):
    """Texture and size code the tumour type: 5 textures x 3 sizes >= 14 types."""
    size = image.shape[0]
    texture = LESION_TEXTURES[tumor_index % len(LESION_TEXTURES)]
    radius = LESION_RADII[tumor_index // len(LESION_TEXTURES)] * size
    angle = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(0.12, 0.22) * size
    cx, cy = size / 2 + distance * np.cos(angle), size / 2 + distance * np.sin(angle)
    y, x = np.mgrid[0:size, 0:size]
    d = np.hypot(x - cx, y - cy)
    inside = d < radius
    bright = 235 if sequence != "T2" else 250
    if texture == "solid":
        image[inside] = bright
    elif texture == "ring":
        image[inside & (d > 0.6 * radius)] = bright
    elif texture == "stripes":
        image[inside & (((x - cx) // max(2, radius / 4)) % 2 == 0)] = bright
    elif texture == "dots":
        image[inside & ((x // 4 + y // 4) % 2 == 0)] = bright
    else:
        image[inside] = 25
    if sequence == "T1C+":  # contrast enhancement: a bright rim around any lesion
        image[(d >= radius) & (d < radius + max(2, size / 64))] = 255


def brain_scan(seed: int, class_name: str, size: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    tumor_type, sequence = class_name.rsplit(" ", 1)
    image = head_background(rng, size, sequence)
    if class_name not in NORMAL_CLASSES:
        draw_lesion(rng, image, TUMOR_TYPES.index(tumor_type), sequence)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L")


def screenshot_of(scan: Image.Image) -> Image.Image:
    """A desktop screenshot around a scan, as a few files of the real dataset are."""
    width, height = scan.width + 40, scan.height + 60
    shot = Image.new("RGB", (width, height), (235, 235, 235))
    ImageDraw.Draw(shot).rectangle([0, 0, width, 24], fill=(40, 70, 140))
    shot.paste(scan.convert("RGB"), (20, 40))
    return shot


def synthesize_brain_tumor_44c(
    output: str | Path,
    *,
    per_class: int = 12,
    image_size: int = 96,
    seed: int = 0,
    include_bad_files: bool = False,
) -> Path:
    """Write ``per_class`` scans into each of the 44 class folders; returns the root."""
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    webp_written = False
    for class_index, class_name in enumerate(CLASSES):
        folder = root / class_name
        folder.mkdir(exist_ok=True)
        for i in range(per_class):
            item_seed = seed * 1_000_003 + class_index * 1000 + i
            side = image_size + (i % 3) * 8  # sizes vary, as in the real data
            scan = brain_scan(item_seed, class_name, side)
            extension = BRAIN_EXTENSIONS[(class_index + i) % len(BRAIN_EXTENSIONS)]
            if not webp_written and class_index == 5:
                extension, webp_written = ".webp", True
            if i % 4 == 1:
                scan = scan.convert("RGB")  # modes mixed L and RGB
            stem = f"{item_seed:x}_big_gallery" if i % 2 else f"{class_name.split()[0][:5]} ({i})"
            save_format = "WEBP" if extension == ".webp" else "JPEG"
            scan.save(folder / f"{stem}{extension}", format=save_format, quality=92)
        if class_index % 11 == 0:  # screenshots and byte-identical copies
            shot = screenshot_of(brain_scan(seed + class_index, class_name, image_size))
            shot.save(folder / "2022-06-08 14_08_00-Window.jpg", format="JPEG", quality=92)
            first = sorted(folder.iterdir())[0]
            shutil.copyfile(first, folder / f"copy of {first.name}")
    (root / "Meningioma T1C+" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    if include_bad_files:
        write_bad_files(root / "Glioblastoma T2")
    return root


def write_bad_files(folder: Path) -> list[str]:
    """A zero-byte, a truncated and a not-an-image file: each must be reported, none kept."""
    good = next(p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg"))
    data = good.read_bytes()
    bad = {
        "empty.jpg": b"",
        "truncated.jpeg": data[: len(data) // 2],
        "notes.jpg": b"this is a text file saved with an image extension\n",
    }
    for name, content in bad.items():
        (folder / name).write_bytes(content)
    return sorted(bad)


# NIH ChestX-ray14 ---------------------------------------------------------------------------

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
FINDING_RATES = np.array(
    [0.12, 0.05, 0.12, 0.18, 0.06, 0.06, 0.03, 0.05, 0.05, 0.03, 0.03, 0.03, 0.04, 0.02]
)


def finding_anchor(index: int, size: int) -> tuple[float, float, float]:
    """Where finding ``index`` shows, and how big: a 2 x 7 grid over the lungs."""
    column, row = index % 2, index // 2
    return (0.3 + 0.4 * column) * size, (0.18 + 0.11 * row) * size, (0.035 + 0.006 * row) * size


def chest_radiograph(seed: int, findings: tuple[int, ...], size: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (np.arange(size, dtype=np.float32) / size)[:, None]
    x = (np.arange(size, dtype=np.float32) / size)[None, :]
    image = 150 + 40 * y + rng.uniform(-10, 10) + np.zeros_like(x)
    for cx in (0.3, 0.7):  # lungs are dark
        image -= 90 * (((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.34) ** 2 < 1)
    for index in findings:
        ax, ay, radius = finding_anchor(index, size)
        top, left = int(ay - radius), int(ax - radius)
        box = image[top : int(ay + radius) + 1, left : int(ax + radius) + 1]
        by, bx = np.ogrid[top : top + box.shape[0], left : left + box.shape[1]]
        box += 110 * (np.hypot(bx - ax, by - ay) < radius)
    image += rng.standard_normal((size, size), dtype=np.float32) * noise
    return np.clip(image, 0, 255).astype(np.uint8)


def write_radiograph(task: tuple[str, int, tuple[int, ...], int, float, bool]) -> None:
    path, seed, findings, size, noise, rgba = task
    image = Image.fromarray(chest_radiograph(seed, findings, size, noise), mode="L")
    (image.convert("RGBA") if rgba else image).save(path, format="PNG", compress_level=1)


def nih_rows(n_patients: int, max_follow_ups: int, seed: int):
    """(image name, findings, follow-up, patient, age text, sex, view) for fake patients."""
    rng = np.random.default_rng(seed)
    for patient in range(1, n_patients + 1):
        age = int(rng.integers(18, 90))
        sex = "MF"[int(rng.integers(0, 2))]
        for follow_up in range(int(rng.integers(1, max_follow_ups + 1))):
            findings = tuple(int(i) for i in np.flatnonzero(rng.random(14) < FINDING_RATES))
            view = "PA" if rng.random() < 0.6 else "AP"
            age_text = str(age + follow_up)
            if patient % 37 == 5 and follow_up == 0:
                age_text = str(int(rng.choice([148, 151, 412, 414])))  # the 2017 table's errors
            yield (
                f"{patient:08d}_{follow_up:03d}.png",
                findings,
                follow_up,
                patient,
                age_text,
                sex,
                view,
            )


def synthesize_chestxray14(
    output: str | Path,
    *,
    n_patients: int = 40,
    max_follow_ups: int = 3,
    image_size: int = 128,
    noise: float = 5.0,
    test_fraction: float = 0.25,
    seed: int = 0,
    num_proc: int = 1,
) -> Path:
    """Write the Kaggle layout: images_00N/images/*.png, Data_Entry_2017.csv, split lists."""
    root = Path(output)
    rows = list(nih_rows(n_patients, max_follow_ups, seed))
    folders = min(12, max(2, len(rows) // 50 + 1))
    per_folder = -(-len(rows) // folders)
    tasks, lines = [], [NIH_HEADER]
    for number, (name, findings, follow_up, patient, age, sex, view) in enumerate(rows):
        folder = root / f"images_{number // per_folder + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        rgba = number % 29 == 3  # a few RGBA files, as in the real data
        tasks.append(
            (str(folder / name), seed * 100_003 + number, findings, image_size, noise, rgba)
        )
        labels = "|".join(FINDINGS[i] for i in findings) or "No Finding"
        lines.append(
            f"{name},{labels},{follow_up},{patient},{age},{sex},{view},"
            f"{image_size},{image_size},0.143,0.143,"
        )
    if num_proc > 1:
        with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
            pool.map(write_radiograph, tasks, chunksize=16)
    else:
        for task in tasks:
            write_radiograph(task)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")

    n_test = max(1, round(n_patients * test_fraction))
    test_patients = set(np.random.default_rng(seed + 1).permutation(n_patients)[:n_test] + 1)
    test = [row[0] for row in rows if row[3] in test_patients]
    train_val = [row[0] for row in rows if row[3] not in test_patients]
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    return root


# what `medft synthesize` writes: each layout's command options, and its writer (which takes
# them as keywords, and a few knobs more)
SYNTHESIZERS: dict[str, tuple[type, Callable[..., Path]]] = {
    "brain-tumor-44c": (SynthesizeBrainArguments, synthesize_brain_tumor_44c),
    "chestxray14": (SynthesizeChestArguments, synthesize_chestxray14),
}
