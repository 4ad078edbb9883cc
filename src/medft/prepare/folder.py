"""Any image folder: one subfolder per class, or train/ val/ test/ folders that hold them.

Splits given as folders are kept as given; a missing validation or test split
is carved from train, stratified by class, with byte-identical files kept
together so a copy cannot leak from train into evaluation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Value

from medft.config.prepare import FolderOptions
from medft.errors import MedftError
from medft.formats.image_files import is_image_file, scan_images
from medft.prepare.files import (
    class_folder_splits,
    count_loose_files,
    duplicate_notes,
    list_subfolders,
    require_folder,
)
from medft.prepare.listing import Example, SourceListing
from medft.prepare.splits import canonical_split, groups_in_several_splits


def split_folders(root: Path) -> dict[str, Path] | None:
    """{'train': root/Training, ...} when every subfolder names a split, else None."""
    subfolders = list_subfolders(root)
    if not subfolders or not all(canonical_split(folder.name) for folder in subfolders):
        return None
    folders: dict[str, Path] = {}
    for folder in subfolders:
        split = canonical_split(folder.name)
        if split in folders:
            raise MedftError(
                f"{root} has two folders for the {split} split: "
                f"'{folders[split].name}' and '{folder.name}'. Merge or remove one."
            )
        folders[split] = folder
    if "train" not in folders:
        raise MedftError(f"{root} has split folders but no train/ folder; add one.")
    return folders


@dataclass
class ClassFolders:
    """A tree of class folders (optionally inside train/ val/ test/): the class names, and
    each file found with its class and the split its folder gives (None: not given)."""

    given: dict[str | None, Path]  # split -> its folder; {None: root} when not split
    class_names: list[str]
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    given_splits: list[str | None] = field(default_factory=list)


def read_class_folders(
    root: Path,
    ignored: Counter[str],
    needs: str,
    accept: Callable[[Path], bool] = is_image_file,
    wanted: str = "an image extension",
) -> ClassFolders:
    """The files (those ``accept`` takes; others counted in ``ignored`` as not ``wanted``) of
    the class folders under ``root``; fewer than two classes stops, saying what the command
    ``needs``."""
    given = split_folders(root) or {None: root}
    class_names = sorted({c.name for folder in given.values() for c in list_subfolders(folder)})
    if len(class_names) < 2:
        found = f"only '{class_names[0]}'" if class_names else "none"
        raise MedftError(f"{root}: found {found} as class folder(s); {needs}")
    found = ClassFolders(given, class_names)
    for split, folder in given.items():
        where = folder.name if split else "dataset root"
        count_loose_files(folder, ignored, where, accept=accept, wanted=wanted)
        for class_folder in list_subfolders(folder):
            files = scan_images(class_folder, ignored, accept=accept, wanted=wanted)
            found.paths += files
            found.labels += [class_names.index(class_folder.name)] * len(files)
            found.given_splits += [split] * len(files)
    return found


def list_image_folder(options: FolderOptions) -> SourceListing:
    root = require_folder(options.source, "--source")
    ignored: Counter[str] = Counter()
    found = read_class_folders(
        root,
        ignored,
        "`medft prepare folder` needs one subfolder per class (at least two), optionally "
        "inside train/ val/ test/ folders.",
    )
    given, class_names = found.given, found.class_names
    paths, labels, given_splits = found.paths, found.labels, found.given_splits

    sizes = options.sizes
    assigned, hashes = class_folder_splits(paths, labels, given_splits, sizes, options.seed)
    splits: dict[str, list[Example]] = {}
    for path, label, split, given_split, digest in zip(
        paths, labels, assigned, given_splits, hashes
    ):
        metadata = {"image_id": path.relative_to(root).as_posix()}
        example = Example(
            path, label, metadata, given_split=given_split, stratum=label, group=digest
        )
        splits.setdefault(split, []).append(example)

    notes = duplicate_notes(hashes, labels)
    if None not in given:
        notes["splits_given_as_folders"] = ", ".join(folder.name for folder in given.values())
        by_split = {s: [hashes[i] for i, g in enumerate(given_splits) if g == s] for s in given}
        notes["identical_files_in_two_given_splits"] = len(groups_in_several_splits(by_split))
    return SourceListing(
        source_type="folder",
        source=str(root.resolve()),
        label_names=class_names,
        multi_label=False,
        splits=splits,
        metadata_features={"image_id": Value("string")},
        ignored=ignored,
        notes=notes,
        carve_sizes=sizes,
        carve_seed=options.seed,
    )
