"""Push a prepared dataset to the Hugging Face Hub with a dataset card that says how it was made.

The card goes up first; `DatasetDict.push_to_hub` then merges its own metadata
(features, splits, data files) into that card instead of writing a bare one. The card
knows the dataset by its name: nothing in it comes from a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import load_from_disk
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from medft.age_bands import AGE_BANDS
from medft.errors import MedftError
from medft.formats.prepared_report import REPORT_NAME, read_report
from medft.prepare.private import KEPT_PRIVATELY
from medft.tasks import TaskInfo

ORIGINS = {
    "brain-tumor-44c": {
        "pretty_name": "Brain Tumor MRI Images 44 Classes",
        "license": "unknown",
        "about": (
            "T1, T1C+ and T2 MRI slices of 14 tumour types and normal brains, from the Kaggle "
            "dataset [fernando2rad/brain-tumor-mri-images-44c]"
            "(https://www.kaggle.com/datasets/fernando2rad/brain-tumor-mri-images-44c). "
            "No licence is stated there; check the source before redistributing."
        ),
    },
    "chestxray14": {
        "pretty_name": "NIH ChestX-ray14",
        "license": "other",
        "about": (
            "Frontal chest radiographs with 14 text-mined findings, from the NIH Clinical Center "
            "(Wang et al., *ChestX-ray8*, CVPR 2017). The test split is NIH's official "
            "`test_list.txt`; validation is carved from `train_val_list.txt` by patient."
        ),
    },
}
PRIVACY = {
    "dicom": (
        "Prepared from DICOM files by `medft prepare dicom`: patient, study and file identifiers "
        "are replaced by keyed one-way hashes (`patient_id`, `study_id`, `image_id`), and only "
        "technical tags are kept (modality, view position, body part, rows, columns, bits "
        "stored, photometric interpretation, manufacturer model; age in whole years, sex and "
        "age band if asked). "
        "**Text burned into the pixels was not checked**: names or dates drawn into an image "
        "are still there."
    ),
}
METADATA_REMOVED = (
    "Metadata that is not pixels (EXIF, XMP, IPTC, comments, PNG text chunks) was removed from "
    "every stored image ({stripped} files had some): JPEG and PNG files keep their compressed "
    "pixels as they were, other formats were re-encoded as PNG."
)
SUBGROUPS = "Subgroup attributes: {columns}: columns to compare a model's results by group."
AGE_BAND = (
    " `age_band` is the age in years as {bands}; an age over 100 is a recording error and has "
    "no band."
)
CITATION = {
    "chestxray14": (
        "@inproceedings{wang2017chestxray,\n"
        "  title={ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on "
        "Weakly-Supervised Classification and Localization of Common Thorax Diseases},\n"
        "  author={Wang, Xiaosong and Peng, Yifan and Lu, Le and Lu, Zhiyong and "
        "Bagheri, Mohammadhadi and Summers, Ronald M},\n"
        "  booktitle={CVPR},\n  year={2017}\n}"
    ),
}


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return name
    return "100K<n<1M"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def subgroup_paragraph(columns: list[str]) -> list[str]:
    """The card's line naming the subgroup columns (none for a source without any)."""
    if not columns:
        return []
    text = SUBGROUPS.format(columns=", ".join(f"`{column}`" for column in columns))
    if "age_band" in columns:
        text += AGE_BAND.format(bands=", ".join(AGE_BANDS))
    return [text]


def dataset_card(report: dict[str, Any], repo_id: str) -> DatasetCard:
    """A dataset card built from a ``prepare_report.json``."""
    origin = ORIGINS.get(report["source_type"], {})
    name = report.get("name") or repo_id.split("/")[-1]
    splits = list(report["counts"])
    total = sum(report["counts"].values())
    data = DatasetCardData(
        pretty_name=origin.get("pretty_name", name),
        license=origin.get("license", "unknown"),
        task_categories=["image-classification"],
        size_categories=size_category(total),
        tags=["medical", "medft", report["source_type"], report["task"]],
    )
    class_rows = [
        [label, *(report["class_counts"][split][label] for split in splits)]
        for label in report["class_counts"][splits[0]]
    ]
    options = ", ".join(
        f"`{key}={value}`" for key, value in report["options"].items() if value != KEPT_PRIVATELY
    )
    task = TaskInfo.from_name(report["task"], report["label_names"])
    command = f"medft prepare {report['source_type']}"
    sections = [
        f"# {data.pretty_name}",
        origin.get("about", f"The images of `{name}`, prepared with medft."),
        "## How it was prepared",
        f"`{command}` (medft {report['medft_version']}) with {options}. "
        f"Task: **{report['task']}**, {len(report['label_names'])} classes, "
        f"labels as {task.label_format}. "
        f"{report['skipped_count']} unreadable or missing files were skipped and "
        f"{report['ignored_count']} non-image files ignored; `{REPORT_NAME}` lists each one."
        + (
            " " + METADATA_REMOVED.format(stripped=report["metadata_stripped"])
            if "metadata_stripped" in report
            else ""
        ),
        "## Splits",
        markdown_table(["split", "images"], [[s, report["counts"][s]] for s in splits]),
        *near_copies_section(report.get("near_duplicates")),
        "## Classes",
        markdown_table(["class", *splits], class_rows),
        *subgroup_paragraph(report.get("subgroup_columns", [])),
        "## Use",
        f'```python\nfrom datasets import load_dataset\n\nds = load_dataset("{repo_id}")\n```',
        "## Not for clinical use",
        "This dataset is for research and education. Models trained on it are not medical "
        "devices and must not be used to diagnose or treat patients.",
    ]
    if report["source_type"] in PRIVACY:
        sections[-2:-2] = ["## Privacy", PRIVACY[report["source_type"]]]
    if report["source_type"] in CITATION:
        sections += ["## Citation", f"```bibtex\n{CITATION[report['source_type']]}\n```"]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def near_copies_section(section: dict[str, Any] | None) -> list[str]:
    """What the card says of near copies: how they were kept together, and what is left."""
    if not section:
        return []
    after, without = section["after"], section["without_near_duplicate_groups"]
    copies = sum(after["with_copy_in_train"].values())
    before = ", ".join(f"{n} {split}" for split, n in without["with_copy_in_train"].items())
    text = (
        f"Near copies of an image (perceptual hashes within {section['threshold']} bits: "
        "another size, JPEG quality, a few pixels cropped, another colour mode, an adjacent "
        f"slice) were kept in one split: {after['groups']} groups holding "
        f"{after['images_in_groups']} images; {after['groups_across_splits']} groups across "
        f"splits, and {copies} evaluation images with a near copy in train (split without "
        f"these groups: {before or 'none'})."
    )
    sheet = section.get("contact_sheet")
    return ["## Near copies", text + (f"\n\n![The largest groups]({sheet})" if sheet else "")]


def push_dataset(
    folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None
) -> str:
    """Upload a prepared dataset folder, its card and its report; returns the dataset URL."""
    report = read_report(folder)
    if report is None:
        raise MedftError(f"{folder} has no {REPORT_NAME}; push a folder written by medft prepare.")
    if "name" not in report:
        raise MedftError(
            f"{Path(folder) / REPORT_NAME} was written by an older medft that recorded local "
            "paths in it; prepare the dataset again (--overwrite) before pushing it."
        )
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    dataset_card(report, repo_id).push_to_hub(repo_id, token=token, repo_type="dataset")
    load_from_disk(str(folder)).push_to_hub(repo_id, private=private, token=token)
    sheet = (report.get("near_duplicates") or {}).get("contact_sheet")
    for name in [REPORT_NAME, *([sheet] if sheet else [])]:
        api.upload_file(
            path_or_fileobj=str(Path(folder) / name),
            path_in_repo=name,
            repo_id=repo_id,
            repo_type="dataset",
        )
    return str(url)
