"""No path that may name a patient reaches anything medft pushes or shows.

Hospital exports name folders after patients. Here the raw images, the prepared datasets
and the trained models all sit under such a folder, and every file that `medft prepare
--push-to-hub` or `push_model` would upload, the dataset cards, and what `medft serve`
shows are searched, byte by byte, for the patient's name and record number.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image, PngImagePlugin

from medft.cli import main
from medft.config.prepare import CsvArguments, DicomArguments, FolderArguments
from medft.formats.prepared_report import read_report
from medft.hub import files_to_push
from medft.prepare import prepare_dataset
from medft.prepare.hub import dataset_card
from medft.prepare.private import private_file
from tests.dicom_files import dicom_copy, pydicom_file
from tests.helpers import run_recipe
from tests.pretrained import save_vit

PATIENT_FOLDER = "DOE^JOHN_MRN1234567"
IDENTIFIERS = ("DOE^JOHN", "MRN1234567")
TEXT = "Patient DOE^JOHN MRN1234567"  # also written into the images' own metadata


def identifiers_in(content: bytes | str) -> list[str]:
    content = content.encode() if isinstance(content, str) else content
    return [word for word in IDENTIFIERS if word.encode() in content]


def leaking_files(root: Path, names: list[str]) -> dict[str, list[str]]:
    found = {name: identifiers_in((root / name).read_bytes()) for name in names}
    return {name: words for name, words in found.items() if words}


def write_images(folder: Path, shade: int, n: int = 16) -> None:
    """Grey PNGs that carry the patient in a text chunk, as some viewers' exports do."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shade)
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", TEXT)
    for i in range(n):
        pixels = (rng.integers(0, 60, (32, 32)) + shade).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"scan{i:02d}.png", pnginfo=info)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exports") / PATIENT_FOLDER
    write_images(root / "raw" / "benign", 0)
    write_images(root / "raw" / "malignant", 150)
    return root


@pytest.fixture(scope="module")
def folder_dataset(exports) -> Path:
    output = exports / "prepared-folder"
    prepare_dataset(FolderArguments(output=output, source=exports / "raw", num_proc=1))
    return output


@pytest.fixture(scope="module")
def trained(exports, folder_dataset) -> Path:
    """A model trained on the folder dataset, then evaluated into its folder by the CLI."""
    output = exports / "model"
    run_recipe("tiny_vit.yaml", folder_dataset, output, "--num_train_epochs", "2")
    code = main(["evaluate", "--model", str(output), "--dataset", str(folder_dataset),
                 "--num-workers", "0", "--bootstrap-resamples", "20"])  # fmt: skip
    assert code == 0
    return output


def check_private_file(output: Path, source: Path) -> dict:
    private = private_file(output)
    assert private.is_file() and private.parent == output.parent
    assert not private.resolve().is_relative_to(output.resolve())
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    record = json.loads(private.read_text())
    assert record["source"] == str(source.resolve())
    return record


def check_dataset(output: Path) -> dict:
    """Every file of the prepared folder (all of it is pushed), and its card."""
    report = read_report(output)
    files = [p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()]
    assert leaking_files(output, files) == {}
    card = dataset_card(report, "me/data").content
    assert identifiers_in(card) == [] and "metadata" in card.lower()
    return report


def test_a_prepared_folder_names_no_patient(exports, folder_dataset):
    report = check_dataset(folder_dataset)
    assert report["name"] == "prepared-folder" and "source" not in report
    assert report["metadata_stripped"] == 32
    assert check_private_file(folder_dataset, exports / "raw")["options"] == {
        "source": str((exports / "raw").resolve())
    }


def test_a_prepared_csv_names_no_patient_and_the_summary_says_where_the_paths_are(exports, capsys):
    rows = [f"{name}/scan{i:02d}.png,{name}" for name in ("benign", "malignant") for i in range(16)]
    table = exports / "labels.csv"
    table.write_text("image,label\n" + "\n".join([*rows, "gone/missing.png,benign"]) + "\n")
    output = exports / "prepared-csv"
    code = main(["prepare", "csv", "--csv", str(table), "--image-root", str(exports / "raw"),
                 "--output", str(output), "--name", "scans", "--num-proc", "1"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"private: {private_file(output)}" in printed
    report = check_dataset(output)
    assert report["name"] == "scans"
    record = check_private_file(output, table)
    assert record["options"]["image_root"] == str((exports / "raw").resolve())
    (skipped,) = report["skipped"]
    assert (
        record["skipped"]
        == [skipped]
        == [
            {
                "file": "gone/missing.png",
                "reason": "listed in labels.csv but not found",
                "split": skipped["split"],
            }
        ]
    )


def test_absolute_paths_in_a_csv_reach_the_dataset_as_paths_below_their_shared_folder(exports):
    raw = (exports / "raw").resolve()
    rows = [
        f"{raw / name / f'scan{i:02d}.png'},{name}"
        for name in ("benign", "malignant")
        for i in range(16)
    ]
    table = exports / "absolute.csv"
    table.write_text("image,label\n" + "\n".join(rows) + "\n")
    output = exports / "prepared-absolute"
    prepare_dataset(
        CsvArguments(output=output, csv_path=table, image_root=exports / "elsewhere", num_proc=1)
    )
    check_dataset(output)
    ids = sorted(
        image_id for part in load_from_disk(str(output)).values() for image_id in part["image_id"]
    )
    assert ids[0] == "benign/scan00.png" and ids[-1] == "malignant/scan15.png"


def test_a_prepared_dicom_source_names_no_patient(exports):
    source = exports / "dicom"
    for i in range(3):
        dicom_copy("CT_small.dcm", source / "ct" / f"ct{i}.dcm", PatientID=f"C{i}")
        dicom_copy("MR_small.dcm", source / "mr" / f"mr{i}.dcm", PatientID=f"M{i}")
    (source / "mr" / "broken.dcm").write_bytes(pydicom_file("MR_truncated.dcm").read_bytes())
    output = exports / "prepared-dicom"
    report = prepare_dataset(DicomArguments(output=output, source=source, num_proc=1))
    check_dataset(output)
    assert report["skipped_count"] == 1
    check_private_file(output, source)


def test_nothing_a_trained_model_pushes_or_shows_names_the_patient(trained):
    from medft.commands.serve import load_served_model

    pushed = files_to_push(trained)
    assert {
        "README.md",
        "metrics.json",
        "recipe.json",
        "training_args.json",
        "trainer_state.json",
    } <= set(pushed)
    assert leaking_files(trained, pushed) == {}
    metrics = json.loads((trained / "metrics.json").read_text())
    assert (metrics["model"], metrics["dataset"]) == ("model", "prepared-folder")
    state = json.loads((trained / "trainer_state.json").read_text())
    assert (trained / state["best_model_checkpoint"]).is_dir()  # relative to the model folder
    served = load_served_model(trained)
    assert identifiers_in(served.name + served.notice) == []
    assert "prepared-folder" in served.notice


def test_a_local_base_model_is_named_not_located(exports, folder_dataset):
    base = save_vit(exports / "vit-base")
    output = exports / "adapter"
    run_recipe("pretrained.yaml", folder_dataset, output, "--model_name_or_path", str(base),
               "--lora_r", "4", "--save_adapter_only", "true")  # fmt: skip
    assert leaking_files(output, files_to_push(output)) == {}
    assert "the local model folder `vit-base`" in (output / "README.md").read_text()
