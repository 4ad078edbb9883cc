"""`medft.inference`: a saved model loaded to score with (`classifier`), what to score
(`inputs`), images read as `pipeline()` reads them (`reading`), and batches scored
(`scoring`), on tiny untrained models (`medft predict` end to end, damaged weights and
precisions: test_prediction; exported models: test_onnx_model; DICOM: test_dicom_end_to_end)."""

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image
from transformers import AutoModelForImageClassification

from medft import load_image
from medft.errors import MedftError
from medft.evaluation.thresholds import Thresholds, save_thresholds
from medft.inference.classifier import (
    Classifier,
    LogitsOnly,
    load_classifier,
    load_members,
    stored_thresholds,
)
from medft.inference.inputs import collect_inputs, labelled_dataset
from medft.inference.reading import ImageReader, collate_images, short_reason
from medft.inference.scoring import score_images, score_members, score_split
from medft.inference.tta import HFLIP, ORIGINAL
from medft.tasks import TaskInfo
from tests.helpers import THREE, grey_scans, save_tiny_model, saved_splits

BINARY = TaskInfo(["normal", "tumor"], multi_label=False)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A tiny ViT predicting THREE's labels, saved, and loaded on the CPU."""
    folder = save_tiny_model(tmp_path_factory.mktemp("three") / "model")
    return load_classifier(folder, device="cpu")


def pixels_of(classifier, images: list[Image.Image]) -> torch.Tensor:
    rgb = [image.convert("RGB") for image in images]  # as pipeline() gives them
    return classifier.processor(images=rgb, return_tensors="pt")["pixel_values"]


def grey(shade: int, size=(20, 20)) -> Image.Image:
    return Image.new("L", size, shade)


def ramp(start: int) -> Image.Image:
    """Darker on the left than on the right: a flip changes it."""
    return Image.fromarray(np.tile(np.arange(start, start + 200, 10, dtype=np.uint8), (20, 1)))


# classifier -----------------------------------------------------------------------------------


def test_a_saved_model_loads_ready_to_score_as_transformers_would_run_it(three):
    assert isinstance(three, Classifier) and three.runs_on == "cpu"
    assert three.task.label_names == THREE.label_names and not three.model.training
    assert (three.autocast, three.dicom) == (None, None)
    patches = three.model.vit.embeddings.patch_embeddings.projection.weight
    assert patches.is_contiguous(memory_format=torch.channels_last)
    pixels = pixels_of(three, [ramp(0), ramp(40)])
    reference = AutoModelForImageClassification.from_pretrained(three.folder).eval()
    with torch.no_grad():
        expected = reference(pixel_values=pixels).logits.numpy()
        assert LogitsOnly(reference)(pixels).numpy() == pytest.approx(expected, abs=1e-6)
    assert three.logits(pixels) == pytest.approx(expected, abs=1e-5)
    flipped = reference(pixel_values=pixels.flip(-1)).logits.detach().numpy()
    assert three.logits(pixels, HFLIP) == pytest.approx(flipped, abs=1e-5)
    assert not np.allclose(flipped, expected)
    assert load_classifier(three.folder, "cpu", "bf16").autocast is torch.bfloat16


def test_a_folder_with_a_lora_adapter_only_says_how_to_save_the_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(MedftError) as error:
        load_classifier(tmp_path)
    assert str(error.value) == (
        f"--model {tmp_path} is not a saved model (no config.json) (it holds a LoRA adapter only: "
        "retrain without save_adapter_only); give the output_dir of `medft train` or a folder "
        "holding a model saved with save_pretrained."
    )


def test_a_config_that_cannot_be_read_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(MedftError) as error:
        load_classifier(tmp_path)
    assert str(error.value).startswith(f"cannot read the model config in {tmp_path}: ")
    assert "\n" not in str(error.value)


def test_thresholds_come_from_the_path_given_else_from_beside_the_model(three, tmp_path):
    assert stored_thresholds(three, tmp_path / "none.json") is None  # multi-class: the top class
    binary = load_classifier(save_tiny_model(tmp_path / "binary", task=BINARY), device="cpu")
    assert stored_thresholds(binary, None) is None  # none saved
    for cut, path in ((0.4, binary.folder / "thresholds.json"), (0.7, tmp_path / "given.json")):
        save_thresholds(Thresholds({"tumor": cut}, "youden", "validation"), BINARY, path)
    assert stored_thresholds(binary, None).values == {"tumor": 0.4}
    assert stored_thresholds(binary, tmp_path / "given.json").values == {"tumor": 0.7}
    missing = tmp_path / "missing.json"
    with pytest.raises(MedftError) as error:
        stored_thresholds(binary, missing)
    assert str(error.value) == f"--thresholds {missing} does not exist; check the path."


def test_the_members_of_an_ensemble_must_predict_the_same_labels(three, tmp_path):
    other = save_tiny_model(tmp_path / "binary", task=BINARY)
    assert [m.task.label_names for m in load_members([three.folder] * 2, "cpu")] == [
        THREE.label_names
    ] * 2
    with pytest.raises(MedftError) as error:
        load_members([three.folder, other], "cpu")
    assert str(error.value) == (
        f"the models of an ensemble must predict the same labels: {other} has normal, tumor, "
        f"{three.folder} benign, malignant, normal."
    )


# inputs ---------------------------------------------------------------------------------------


def test_files_come_first_then_dataset_rows_named_by_image_id_or_row(tmp_path):
    folder = tmp_path / "scans"
    (folder / "deeper").mkdir(parents=True)
    grey(10).save(folder / "deeper" / "b.png")
    grey(20).save(folder / "a.png")
    (folder / "notes.txt").write_text("not a scan")
    rows = grey_scans([(8, 8)] * 3)
    plain = saved_splits({"test": rows}, tmp_path / "plain")
    named = saved_splits({"test": rows.add_column("image_id", ["x", "y", "z"])}, tmp_path / "ids")
    missing = tmp_path / "missing.png"
    found = collect_inputs([folder, missing, plain, named])
    assert found.files == [folder / "a.png", folder / "deeper" / "b.png", missing]
    assert found.names == [
        *map(str, found.files),
        *(f"{plain}:test:{row}" for row in range(3)),
        *(f"{named}:test:{image_id}" for image_id in "xyz"),
    ]
    assert [len(split) for split in found.splits] == [3, 3] and found.frames == [None] * 3
    assert [str(path) for path in found.datasets] == [plain, named]


def test_a_folder_of_other_files_says_how_many_were_ignored(tmp_path):
    (tmp_path / "notes.txt").write_text("not a scan")
    (tmp_path / "table.csv").write_text("a,b")
    with pytest.raises(MedftError) as error:
        collect_inputs([tmp_path])
    assert str(error.value) == (
        f"found no images in {tmp_path} (2 other files ignored); give image files, folders of "
        "them, or a prepared dataset."
    )


def test_a_model_is_evaluated_only_on_data_with_the_labels_it_predicts(three, tmp_path):
    binary = save_tiny_model(tmp_path / "binary", task=BINARY)
    name = saved_splits({"test": grey_scans([(8, 8)] * 2)}, tmp_path / "data")
    dataset, task = labelled_dataset(name, binary, "test")
    assert task.same_labels(BINARY) and len(dataset["test"]) == 2
    with pytest.raises(MedftError) as error:
        labelled_dataset(name, three.folder, "test")
    assert str(error.value) == (
        f"the model in {three.folder} predicts multiclass labels benign, malignant, normal, but "
        f"{name} has binary labels normal, tumor; evaluate it on the data it was trained for, "
        "or map the dataset's labels onto the model's (medft evaluate --label-map)."
    )


# reading --------------------------------------------------------------------------------------


def test_images_are_read_as_pipeline_reads_them(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # to be shown rotated 90 degrees clockwise
    Image.new("L", (30, 20), 90).save(tmp_path / "rotated.jpg", exif=exif)
    rotated = load_image(tmp_path / "rotated.jpg")
    assert (rotated.mode, rotated.size) == ("RGB", (20, 30))
    deep = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # a 16-bit image: scaled by its range
    scaled = np.asarray(load_image(tmp_path / "deep.png"))
    assert scaled.shape == (8, 8, 3) and (scaled.min(), scaled.max()) == (0, 255)


def test_each_item_is_pixels_or_the_reason_it_could_not_be_read(three, tmp_path):
    grey(60).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    stored = [io.BytesIO(), b"not an image"]
    grey(120).save(stored[0], format="PNG")
    features = Features({"image": ImageFeature(decode=False)})
    rows = [{"bytes": stored[0].getvalue(), "path": None}, {"bytes": stored[1], "path": None}]
    split = Dataset.from_dict({"image": rows}, features=features)
    files = [tmp_path / "good.png", tmp_path / "missing.png", tmp_path / "broken.png"]
    reader = ImageReader(three, files, [split])
    items = [reader[index] for index in range(len(reader))]
    assert len(reader) == 5 and [item[0] for item in items] == [0, 1, 2, 3, 4]
    expected = pixels_of(three, [grey(60), grey(120)])
    assert torch.equal(items[0][1], expected[0]) and torch.equal(items[3][1], expected[1])
    assert items[1][1:] == (None, "FileNotFoundError: no such file")
    assert items[2][1] is None and items[2][2].startswith("UnidentifiedImageError: ")
    assert items[4][1] is None and items[4][2].startswith("UnidentifiedImageError: ")
    indices, batch, errors = collate_images(items)
    assert indices == [0, 3] and torch.equal(batch, expected)
    assert errors == {1: items[1][2], 2: items[2][2], 4: items[4][2]}
    assert collate_images(items[1:3])[1] is None


def test_a_reason_is_one_short_line():
    assert short_reason(OSError("bad\n  header\tbytes")) == "OSError: bad header bytes"
    assert short_reason(ValueError()) == "ValueError: no details"
    assert short_reason(RuntimeError("x" * 300)) == "RuntimeError: " + "x" * 200


# scoring --------------------------------------------------------------------------------------


def test_scores_are_probabilities_averaged_over_views_with_nan_rows_for_unreadable_items(three):
    pixels = pixels_of(three, [ramp(0), ramp(50)])
    items = [(0, pixels[0], None), (1, None, "OSError: broken"), (2, pixels[1], None)]
    probs, errors = score_images(three, items, batch_size=2, num_workers=0, progress=False)
    assert errors == {1: "OSError: broken"} and np.isnan(probs[1]).all()
    assert probs[[0, 2]] == pytest.approx(three.task.probabilities(three.logits(pixels)))
    logits, _ = score_images(three, items, batch_size=3, num_workers=0, logits=True, progress=False)
    assert logits[[0, 2]] == pytest.approx(three.logits(pixels), abs=1e-6)
    views = (ORIGINAL, HFLIP)
    averaged, _ = score_images(
        three, items, batch_size=1, num_workers=0, progress=False, views=views
    )
    each = [three.task.probabilities(three.logits(pixels, view)) for view in views]
    assert averaged[[0, 2]] == pytest.approx(np.mean(each, axis=0))
    assert not np.allclose(averaged[[0, 2]], probs[[0, 2]])


def test_an_ensemble_scores_the_mean_of_its_members(three, tmp_path):
    torch.manual_seed(1)
    second = load_classifier(save_tiny_model(tmp_path / "second"), device="cpu")
    grey(70).save(tmp_path / "scan.png")
    files = [tmp_path / "scan.png", tmp_path / "missing.png"]
    split = grey_scans([(12, 12), (16, 9)])
    settings = {"batch_size": 2, "num_workers": 0, "progress": False}
    members = (three, second)
    alone = [score_images(m, ImageReader(m, files, [split]), **settings)[0] for m in members]
    assert not np.allclose(alone[0][0], alone[1][0])  # two different models
    probs, errors = score_members(members, files, [split], **settings)
    assert probs == pytest.approx(np.mean(alone, axis=0), nan_ok=True)
    assert list(errors) == [1] and np.isnan(probs[1]).all()
    on_split, no_errors = score_split(members, split, batch_size=2, num_workers=0)
    assert on_split == pytest.approx(probs[2:]) and no_errors == {}
