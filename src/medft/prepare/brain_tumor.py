"""Brain Tumor MRI Images 44 Classes (Kaggle fernando2rad/brain-tumor-mri-images-44c).

One folder per class under the root, named "<Tumour> <Sequence>" with the
dataset's own spellings; `_NORMAL T1` and `_NORMAL T2` are the normal scans.
The binary task (normal / tumor) uses the same file-to-split assignment as the
44-class task, so results on the two are comparable.
"""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path

from datasets import Value

from medft.config.prepare import BrainTumorOptions
from medft.errors import MedftError
from medft.formats.image_files import scan_images
from medft.prepare.files import (
    class_folder_splits,
    count_loose_files,
    duplicate_notes,
    list_subfolders,
    require_folder,
)
from medft.prepare.listing import Example, SourceListing

TUMOR_TYPES = (
    "Astrocitoma", "Carcinoma", "Ependimoma", "Ganglioglioma", "Germinoma", "Glioblastoma",
    "Granuloma", "Meduloblastoma", "Meningioma", "Neurocitoma", "Oligodendroglioma",
    "Papiloma", "Schwannoma", "Tuberculoma",
)  # fmt: skip
SEQUENCES = ("T1", "T1C+", "T2")
NORMAL_CLASSES = ("_NORMAL T1", "_NORMAL T2")
CLASSES = sorted([f"{t} {s}" for t in TUMOR_TYPES for s in SEQUENCES] + list(NORMAL_CLASSES))
BINARY_LABELS = ["normal", "tumor"]
TASKS = ("multiclass", "binary")


def parse_class(name: str) -> tuple[str, str]:
    """'Astrocitoma T1C+' -> ('Astrocitoma', 'T1C+'); '_NORMAL T2' -> ('normal', 'T2')."""
    tumor_type, sequence = name.rsplit(" ", 1)
    return ("normal" if name in NORMAL_CLASSES else tumor_type), sequence


def find_class_root(source: Path) -> Path:
    """The folder holding the 44 class folders: ``source`` or a lone wrapper folder inside it."""
    root = source
    while not any((root / name).is_dir() for name in CLASSES):
        subfolders = list_subfolders(root)
        if len(subfolders) != 1:
            return source
        root = subfolders[0]
    return root


def check_class_folders(root: Path, found: list[str]) -> None:
    if not set(found) & set(CLASSES):
        shown = ", ".join(f"'{name}'" for name in found[:4]) or "no folders"
        raise MedftError(
            f"{root} holds none of the 44 class folders (found {shown}); point --source at the "
            f"folder that holds '{CLASSES[0]}' ... '{CLASSES[-1]}'."
        )
    unknown = [name for name in found if name not in CLASSES]
    if unknown:
        guess = difflib.get_close_matches(unknown[0], CLASSES, n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        raise MedftError(
            f"{root / unknown[0]}: folder '{unknown[0]}' is not one of the 44 Brain Tumor MRI "
            f"44c classes{hint}. Rename or remove it, or use `medft prepare folder` "
            "for other classes."
        )
    missing = [name for name in CLASSES if name not in found]
    if missing:
        shown = ", ".join(f"'{name}'" for name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MedftError(
            f"{root} lacks the class folder(s) {shown}{more}; the brain-tumor-44c preset needs "
            "all 44. Point --source at the unzipped Kaggle download, or use `medft prepare folder`."
        )


def list_brain_tumor_44c(options: BrainTumorOptions) -> SourceListing:
    task = options.task
    if task not in TASKS:
        raise MedftError(f"--task must be one of {', '.join(TASKS)}, got '{task}'.")
    root = find_class_root(require_folder(options.source, "--source"))
    check_class_folders(root, [folder.name for folder in list_subfolders(root)])

    ignored: Counter[str] = Counter()
    count_loose_files(root, ignored, where="dataset root")
    paths, class_indices = [], []
    for index, name in enumerate(CLASSES):
        images = scan_images(root / name, ignored)
        paths += images
        class_indices += [index] * len(images)

    sizes = options.sizes
    given = [None] * len(paths)
    split_names, hashes = class_folder_splits(paths, class_indices, given, sizes, options.seed)
    splits: dict[str, list[Example]] = {}
    for path, class_index, split, digest in zip(paths, class_indices, split_names, hashes):
        class_name = CLASSES[class_index]
        tumor_type, sequence = parse_class(class_name)
        label = class_index if task == "multiclass" else int(class_name not in NORMAL_CLASSES)
        metadata = {
            "image_id": path.relative_to(root).as_posix(),
            "tumor_type": tumor_type,
            "sequence": sequence,
        }
        example = Example(path, label, metadata, stratum=class_index, group=digest)
        splits.setdefault(split, []).append(example)

    return SourceListing(
        source_type="brain-tumor-44c",
        source=str(root.resolve()),
        label_names=CLASSES if task == "multiclass" else BINARY_LABELS,
        multi_label=False,
        splits=splits,
        metadata_features={
            "image_id": Value("string"),
            "tumor_type": Value("string"),
            "sequence": Value("string"),
        },
        ignored=ignored,
        notes=duplicate_notes(hashes, class_indices),
        carve_sizes=sizes,
        subgroup_columns=["sequence"],  # how a scan was acquired; the tumour type is the label
        carve_seed=options.seed,
    )
