"""The near-duplicate leakage audit: what the groups of near copies say about a dataset's splits.

`medft prepare` reports it for the splits it made (and what a plain image-level split would
have done), and `medft audit` for any prepared dataset or pair of datasets. Everything here
works on hashes, splits and patient ids; images are only read to draw the contact sheet.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from medft.formats.pixel_budget import opened_image
from medft.near_duplicates import near_groups, near_pairs

TRAIN = "train"
SHEET_GROUPS = 8  # groups on the contact sheet, largest first
SHEET_IMAGES = 8  # images per group shown
THUMBNAIL = 160  # pixels, the longer side of each picture on the sheet
SHEET_MARGIN, TITLE_HEIGHT, CAPTION_HEIGHT = 12, 22, 18  # pixels
GREY_TOLERANCE = 8  # an RGB picture whose channels differ by at most this is grey (JPEG chroma)


@dataclass
class LeakageAudit:
    """Near-duplicate groups in a dataset and where its splits put them."""

    threshold: int
    images: int
    groups: int  # groups of two or more images
    images_in_groups: int
    largest_group: int
    groups_across_splits: int  # groups whose images sit in more than one split
    with_copy_in_train: dict[str, int]  # per evaluation split: images with a near copy in train
    split_sizes: dict[str, int]
    groups_joining_patients: int | None = None  # where patient ids exist
    examples: list[list[int]] = field(default_factory=list)  # the largest groups' rows

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "examples"}


def group_members(groups: np.ndarray) -> list[np.ndarray]:
    """The rows of each group of two or more, largest first (then by first row)."""
    order = np.argsort(groups, kind="stable")
    cuts = np.flatnonzero(np.diff(groups[order])) + 1
    members = [part for part in np.split(order, cuts) if len(part) > 1]
    return sorted(members, key=lambda rows: (-len(rows), rows[0]))


def spread(members: list[np.ndarray], labels: np.ndarray) -> int:
    """How many groups hold more than one value of ``labels`` (splits, patients; None, an
    unknown patient, joins nobody)."""
    return sum(1 for rows in members if len(set(labels[rows]) - {None}) > 1)


def copies_in_train(
    values: np.ndarray, splits: np.ndarray, threshold: int, train: str = TRAIN
) -> dict[str, int]:
    """Per split other than train: how many of its images have a near copy in train."""
    in_train = np.flatnonzero(splits == train)
    found = {}
    for split in sorted(set(splits) - {train}):
        rows = np.flatnonzero(splits == split)
        pairs = near_pairs(values[rows], threshold, values[in_train])
        found[split] = len(set(pairs[:, 0].tolist()))
    return found


def audit(
    values: np.ndarray,
    splits: list[str],
    threshold: int,
    patients: list | None = None,
) -> LeakageAudit:
    """The audit of one dataset: its hashes (as integers), each image's split, optionally its
    patient."""
    splits_array = np.asarray(splits, dtype=object)
    groups = near_groups(values, threshold)
    members = group_members(groups)
    known = None if patients is None else np.asarray(patients, dtype=object)
    return LeakageAudit(
        threshold=threshold,
        images=len(values),
        groups=len(members),
        images_in_groups=int(sum(len(rows) for rows in members)),
        largest_group=max((len(rows) for rows in members), default=1),
        groups_across_splits=spread(members, splits_array),
        with_copy_in_train=copies_in_train(values, splits_array, threshold),
        split_sizes=dict(Counter(splits)),
        groups_joining_patients=None if known is None else spread(members, known),
        examples=[rows.tolist() for rows in members[:SHEET_GROUPS]],
    )


def format_audit(report: LeakageAudit) -> list[str]:
    """The audit as lines of the prepare summary and of `medft audit`."""
    copies = ", ".join(
        f"{split} {count} of {report.split_sizes.get(split, 0)}"
        for split, count in report.with_copy_in_train.items()
    )
    lines = [
        f"near-duplicate groups (pHash within {report.threshold} bits): {report.groups}, "
        f"holding {report.images_in_groups} of {report.images} images (largest "
        f"{report.largest_group}); {report.groups_across_splits} across splits",
        f"  images with a near copy in train: {copies or 'no split but train'}",
    ]
    if report.groups_joining_patients:
        lines.append(
            f"  groups joining two or more patients: {report.groups_joining_patients} (the same "
            "image under two patient ids is worth a look)"
        )
    return lines


# the contact sheet -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """Where an audited image is stored: a prepared dataset's folder, a split, a row."""

    dataset: str
    split: str
    row: int


def thumbnails(wanted: list[Row]) -> dict[Row, Image.Image]:
    """Small copies of the stored images at ``wanted``, each split read once."""
    from datasets import Image as ImageFeature
    from datasets import load_from_disk

    found = {}
    for dataset, split in sorted({(row.dataset, row.split) for row in wanted}):
        rows = sorted({row.row for row in wanted if (row.dataset, row.split) == (dataset, split)})
        part = load_from_disk(dataset)[split].cast_column("image", ImageFeature(decode=False))
        for index, stored in zip(rows, part.select(rows)["image"]):
            source = io.BytesIO(stored["bytes"]) if stored["bytes"] else stored["path"]
            with opened_image(source) as image:
                small = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
            small.thumbnail((THUMBNAIL, THUMBNAIL))
            found[Row(dataset, split, index)] = grey_if_grey(small)
    return found


def grey_if_grey(picture: Image.Image) -> Image.Image:
    """An RGB picture of a greyscale scan (a JPEG's channels within GREY_TOLERANCE) in L."""
    if picture.mode != "RGB":
        return picture
    red, green, blue = picture.split()
    spread = max(
        ImageChops.difference(red, green).getextrema()[1],
        ImageChops.difference(green, blue).getextrema()[1],
    )
    return picture.convert("L") if spread <= GREY_TOLERANCE else picture


def describe(rows: list[Row]) -> str:
    """'9 images (8 shown): train 8, validation 1'."""
    splits = Counter(row.split for row in rows)
    shown = "" if len(rows) <= SHEET_IMAGES else f" ({SHEET_IMAGES} shown)"
    return f"{len(rows)} images{shown}: " + ", ".join(f"{s} {n}" for s, n in splits.items())


def contact_sheet(report: LeakageAudit, rows: list[Row], path: Path) -> Path | None:
    """The largest groups' images side by side, captioned with split and row (None when there
    is no group)."""
    if not report.examples:
        return None
    groups = [[rows[item] for item in members] for members in report.examples]
    pictures = thumbnails([row for group in groups for row in group[:SHEET_IMAGES]])
    several = len({row.dataset for row in rows}) > 1

    def caption(row: Row) -> str:
        return f"{Path(row.dataset).name}:" * several + f"{row.split} #{row.row}"

    sheet = [
        (
            f"group {number}: {describe(group)}",
            [(pictures[row], caption(row)) for row in group[:SHEET_IMAGES]],
        )
        for number, group in enumerate(groups, start=1)
    ]
    return draw_contact_sheet(sheet, path)


def draw_contact_sheet(rows: list[tuple[str, list[tuple[Image.Image, str]]]], path: Path) -> Path:
    """One row per group of pictures (at most THUMBNAIL pixels a side): its title, then each
    picture with its caption below, on white (in greyscale when every picture is); drawn with
    Pillow, in a fraction of a second."""
    font, title_font = ImageFont.load_default(11), ImageFont.load_default(13)
    cell = THUMBNAIL + SHEET_MARGIN
    height = TITLE_HEIGHT + THUMBNAIL + CAPTION_HEIGHT + SHEET_MARGIN
    columns = max(len(pictures) for _, pictures in rows)
    grey = all(picture.mode == "L" for _, pictures in rows for picture, _ in pictures)
    mode = "L" if grey else "RGB"
    sheet = Image.new(
        mode, (SHEET_MARGIN + columns * cell, SHEET_MARGIN + len(rows) * height), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for number, (title, pictures) in enumerate(rows):
        top = SHEET_MARGIN + number * height
        draw.text((SHEET_MARGIN, top), title, fill="black", font=title_font)
        for column, (picture, caption) in enumerate(pictures):
            left = SHEET_MARGIN + column * cell
            corner = (
                left + (THUMBNAIL - picture.width) // 2,
                top + TITLE_HEIGHT + (THUMBNAIL - picture.height) // 2,
            )
            sheet.paste(picture.convert(mode), corner)
            draw.text(
                (left + THUMBNAIL // 2, top + TITLE_HEIGHT + THUMBNAIL + 3),
                caption,
                fill="black",
                font=font,
                anchor="ma",
            )
    sheet.save(path)
    return path
