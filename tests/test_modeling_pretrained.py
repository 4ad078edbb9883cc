"""Fine-tuning from pretrained weights, by every route, offline: local folders of both families,
Hub ids served from a local cache, and a weights file holding real ImageNet weights."""

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_sample_images
from transformers import AutoModelForImageClassification, pipeline

from benchmarks.lite0_weights import TF_PREPROCESSING
from medft.config import ModelArguments
from medft.data.loading import load_training_data
from medft.errors import MedftError
from medft.modeling import build_model
from medft.modeling.backbones import build_backbone
from medft.parsing import parse_recipe
from medft.tasks import TaskInfo
from medft.training import train
from tests import pretrained
from tests.helpers import DAMAGES, FIXTURES, THREE, damage

BRAIN_BINARY = {0: "normal", 1: "tumor"}
ROUTES = ["timm_wrapper", "timm_hub_export", "vit", "timm hub id", "transformers hub id"]
HUB_IDS = {"timm hub id": pretrained.TIMM_HUB_ID, "transformers hub id": pretrained.VIT_HUB_ID}


def fine_tune(model: str, dataset, output, *overrides: str):
    arguments = parse_recipe(
        FIXTURES / "pretrained.yaml",
        ["--model_name_or_path", model, "--dataset_name", str(dataset),
         "--output_dir", str(output), *overrides],
    )  # fmt: skip
    return train(*arguments).test_metrics


def backbone_tensors(model) -> dict[str, torch.Tensor]:
    head = model.timm_model.get_classifier() if hasattr(model, "timm_model") else model.classifier
    head_names = {
        name
        for name, tensor in model.named_parameters()
        if any(tensor is p for p in head.parameters())
    }
    return {k: v for k, v in model.state_dict().items() if k not in head_names}


def initial_tensors(folder, timm_family: bool) -> dict[str, torch.Tensor]:
    """The pretrained folder's tensors under the fine-tuned model's names."""
    if not timm_family:
        return AutoModelForImageClassification.from_pretrained(folder).state_dict()
    tensors = load_file(str(folder / "model.safetensors"))  # timm's own export: no prefix
    return {
        key if key.startswith("timm_model.") else f"timm_model.{key}": value
        for key, value in tensors.items()
    }


@pytest.mark.parametrize("route", ROUTES)
def test_fine_tuning_from_pretrained_weights_saves_the_datasets_labels(
    route, request, pretrained_folders, brain_binary, tmp_path, caplog
):
    if route in HUB_IDS:
        request.getfixturevalue("offline_hub")
        source, folder = (
            HUB_IDS[route],
            pretrained_folders["vit" if "transformers" in route else "timm_hub_export"],
        )
    else:
        source = folder = pretrained_folders[route]
    timm_family = "vit" not in str(folder.name)
    output = tmp_path / "model"
    sized = ["--image_size", "64"] if timm_family else []  # the stored scans are 40 px
    fine_tune(str(source), brain_binary, output, "--freeze", "backbone", *sized)

    config = json.loads((output / "config.json").read_text())
    if timm_family:  # TimmWrapper writes its labels as label_names (id2label is derived)
        assert config["label_names"] == ["normal", "tumor"]
        assert "num_classes" not in (config.get("model_args") or {})
        assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
        assert "upsampled 1.3x" in caplog.text  # the 48 px scans fed to a 64 px input
    else:
        assert config["id2label"] == {"0": "normal", "1": "tumor"}
    reloaded = AutoModelForImageClassification.from_pretrained(output)
    assert reloaded.config.id2label == BRAIN_BINARY
    classifier = pipeline("image-classification", model=str(output))
    assert {s["label"] for s in classifier(Image.new("L", (40, 40), 80), top_k=2)} == {
        "normal",
        "tumor",
    }
    started = initial_tensors(folder, timm_family)
    saved = backbone_tensors(reloaded)
    assert all(torch.equal(started[k], saved[k]) for k in saved)  # frozen: the folder's
    card = (output / "README.md").read_text()
    assert "random initialisation" not in card
    assert (f"huggingface.co/{source}" in card) if route in HUB_IDS else folder.name in card


TIMM_KEYS = [
    ({"image_size": 64}, None),
    ({"freeze": "backbone"}, None),
    ({"freeze": "partial", "unfreeze_last_n": 1}, None),
    ({"freeze": "backbone", "gradual_unfreeze_epochs": 1}, None),
    ({"lora_r": 4}, None),
    ({"head_dropout": 0.2}, None),
    ({"head_hidden_sizes": [16]}, "does not take 'head_hidden_size'"),
    ({"drop_path_rate": 0.1}, None),
    ({"config_overrides": {"drop_rate": 0.1}}, None),
    ({"pretrained_cfg_overlay": {"mean": [0.5] * 3, "std": [0.5] * 3}}, None),
    ({"pretrained": False}, None),
]
VIT_KEYS = [
    ({"image_size": 32}, None),
    ({"image_size": 64}, "image_size 64 differs from the 32"),
    ({"freeze": "partial", "unfreeze_last_n": 1}, None),
    ({"lora_r": 4}, None),
    ({"head_dropout": 0.2}, None),
    ({"head_hidden_sizes": [16]}, "cannot describe an MLP head"),
    ({"drop_path_rate": 0.1}, "have no stochastic depth"),
    ({"config_overrides": {"hidden_dropout_prob": 0.1}}, None),
    ({"pretrained_cfg_overlay": {"mean": [0.5] * 3}}, "timm's preprocessing"),
    ({"pretrained": False}, None),
]


@pytest.mark.parametrize(
    "folder,settings,refusal",
    [("timm_hub_export", *case) for case in TIMM_KEYS] + [("vit", *case) for case in VIT_KEYS],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_every_model_key_works_from_a_local_folder_or_is_refused_in_one_line(
    pretrained_folders, folder, settings, refusal
):
    args = ModelArguments(str(pretrained_folders[folder]), **settings)
    if refusal:
        with pytest.raises(MedftError, match=refusal) as error:
            build_model(args, THREE)
        assert "\n" not in str(error.value)
        return
    built = build_model(args, THREE)
    size = built.family.input_spec(built.processor).size
    if "image_size" in settings:
        assert size == (settings["image_size"],) * 2
    pixels = built.processor(images=[Image.new("RGB", (50, 40))], return_tensors="pt")
    with torch.no_grad():
        assert built.model(**pixels).logits.shape == (1, 3)
    if "drop_path_rate" in settings:
        assert built.model.config.model_args["drop_path_rate"] == 0.1


@pytest.mark.parametrize("folder", ["timm_wrapper", "timm_hub_export", "vit"])
@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_weights_file_in_a_model_folder_is_one_line_naming_it(
    pretrained_folders, folder, how, tmp_path
):
    copy = shutil.copytree(pretrained_folders[folder], tmp_path / folder)
    weights = damage(copy / "model.safetensors", how)
    with pytest.raises(MedftError) as error:
        build_model(ModelArguments(str(copy)), THREE)
    message = str(error.value)
    assert message.startswith(f"the weights file {weights} is ") and "\n" not in message
    assert message.endswith("save the model again (save_pretrained) or download it again.")


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
@pytest.mark.parametrize("pretrained", [True, False])
def test_a_damaged_config_in_a_model_folder_is_one_line_naming_it(
    pretrained_folders, name, pretrained, tmp_path
):
    copy = shutil.copytree(pretrained_folders["vit"], tmp_path / "vit")
    (copy / name).write_text('{"model_type": "vit", "hidd')  # cut short
    with pytest.raises(MedftError) as error:
        build_model(ModelArguments(str(copy), pretrained=pretrained), THREE)
    message = str(error.value)
    assert f"{copy / name}' is not a valid JSON file" in message and "\n" not in message
    assert message.endswith("save the model again (save_pretrained) or download it again.")


def test_only_the_weights_file_transformers_reads_is_checked(pretrained_folders, tmp_path):
    copy = shutil.copytree(pretrained_folders["timm_hub_export"], tmp_path / "export")
    damage(copy / "pytorch_model.bin", "truncated")  # beside model.safetensors: never read
    assert build_model(ModelArguments(str(copy)), THREE).model.num_labels == 3
    (copy / "model.safetensors").unlink()
    with pytest.raises(MedftError, match="pytorch_model.bin is damaged or incomplete"):
        build_model(ModelArguments(str(copy)), THREE)


# real ImageNet weights from a file ------------------------------------------------------------


def lite0_args(weights, preprocessing=TF_PREPROCESSING, **settings):
    return ModelArguments(
        "timm/efficientnet_lite0",
        pretrained_weights=str(weights),
        pretrained_cfg_overlay=dict(preprocessing),
        image_size=224,
        **settings,
    )


def top_labels(folder) -> dict[str, str]:
    classifier = pipeline("image-classification", model=str(folder))
    photos = load_sample_images()
    return {
        name.rsplit("/", 1)[-1]: classifier(Image.fromarray(photo), top_k=1)[0]["label"]
        for name, photo in zip(photos.filenames, photos.images)
    }


def test_real_imagenet_weights_from_a_file_classify_photos_through_pipeline(
    lite0_weights, tmp_path
):
    imagenet = TaskInfo(pretrained.IMAGENET, multi_label=False)
    model, _ = build_backbone(lite0_args(lite0_weights), imagenet)
    model.save_pretrained(tmp_path / "tf")  # its preprocessing travels in config.json
    assert top_labels(tmp_path / "tf") == {"china.jpg": "palace", "flower.jpg": "daisy"}
    config = json.loads((tmp_path / "tf" / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]
    assert "hf_hub_id" not in config["pretrained_cfg"]  # the weights are the file's, not timm's

    imagenet_statistics = {
        "mean": list(timm.data.IMAGENET_DEFAULT_MEAN),
        "std": list(timm.data.IMAGENET_DEFAULT_STD),
    }
    model, _ = build_backbone(lite0_args(lite0_weights, imagenet_statistics), imagenet)
    model.save_pretrained(tmp_path / "imagenet")
    assert top_labels(tmp_path / "imagenet")["flower.jpg"] != "daisy"  # preprocessing matters


def test_a_weights_file_fine_tunes_with_a_new_head_and_the_datasets_labels(
    lite0_weights, brain_binary, tmp_path
):
    overlay = json.dumps(TF_PREPROCESSING)
    output = tmp_path / "model"
    fine_tune("timm/efficientnet_lite0", brain_binary, output, "--pretrained_weights",
              str(lite0_weights), "--pretrained_cfg_overlay", overlay, "--image_size", "64",
              "--freeze", "backbone")  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["label_names"] == ["normal", "tumor"]
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]
    reloaded = AutoModelForImageClassification.from_pretrained(output)
    weights = load_file(str(lite0_weights))
    stem = reloaded.timm_model.conv_stem.weight
    assert torch.equal(stem, weights["conv_stem.weight"])  # frozen, as the file had it
    assert reloaded.timm_model.classifier.out_features == 2
    _, task = load_training_data(str(brain_binary))
    labels = pipeline("image-classification", model=str(output))(Image.new("L", (40, 40)))
    assert {s["label"] for s in labels} == set(task.label_names)
    assert "the weights file `lite0.safetensors`" in (output / "README.md").read_text()


def test_weights_files_are_read_as_timm_reads_checkpoints(lite0_weights, tmp_path):
    weights = load_file(str(lite0_weights))
    nested = tmp_path / "ddp_checkpoint.pth"  # as a DDP training script saves one
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, nested)
    model, _ = build_backbone(lite0_args(nested), THREE)
    assert torch.equal(model.timm_model.conv_stem.weight, weights["conv_stem.weight"])
    assert model.timm_model.classifier.out_features == 3  # the 1000-class head was dropped


def test_weights_that_do_not_fit_are_one_line_naming_the_keys(lite0_weights, tmp_path):
    resnet = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), resnet)
    with pytest.raises(MedftError) as error:
        build_backbone(lite0_args(resnet), THREE)
    message = str(error.value)
    assert "does not fit timm's efficientnet_lite0" in message and "\n" not in message
    assert "missing from the file (conv_stem.weight" in message and "not in the model" in message

    whole_model = tmp_path / "model.pt"
    torch.save(timm.create_model("efficientnet_lite0"), whole_model)  # a pickle of the module
    with pytest.raises(MedftError, match="cannot be read as a state dict.*could run code"):
        build_backbone(lite0_args(whole_model), THREE)
    with pytest.raises(MedftError, match="does not exist"):
        build_backbone(lite0_args(tmp_path / "nowhere.safetensors"), THREE)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_weights_file_is_one_line_saying_to_save_or_download_it_again(
    lite0_weights, how, tmp_path
):
    weights = damage(Path(shutil.copy(lite0_weights, tmp_path / "lite0.safetensors")), how)
    with pytest.raises(MedftError) as error:
        build_backbone(lite0_args(weights), THREE)
    message = str(error.value)
    assert message.startswith(f"pretrained_weights {weights} cannot be read as a state dict (")
    assert "save or download it again" in message and "\n" not in message
    page = tmp_path / "weights.pth"  # a download that saved the server's error page
    page.write_text("<html><body>404 Not Found</body></html>")
    with pytest.raises(MedftError, match="weights.pth cannot be read as a state dict \\(not a "):
        build_backbone(lite0_args(page), THREE)
    one_tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), one_tensor)
    with pytest.raises(MedftError, match="tensor.pt cannot be read as a state dict"):
        build_backbone(lite0_args(one_tensor), THREE)


@pytest.mark.parametrize(
    "settings,message",
    [
        (
            {"model_name_or_path": "google/vit-base-patch16-224", "pretrained_weights": "w.pth"},
            "pretrained_weights is for timm/<architecture> names",
        ),
        ({"pretrained": False, "pretrained_weights": "w.pth"}, "keep one of the two"),
        ({"pretrained_weights": "weights.npz"}, "expected a state dict file"),
        ({"pretrained_cfg_overlay": {"input_size": [3, 64, 64]}}, "the image_size key"),
        ({"pretrained_cfg_overlay": {"interpolation": "cubic"}}, "must be one of nearest"),
        ({"pretrained_cfg_overlay": {"std": [0.5, 0]}}, "std must be positive"),
    ],
)
def test_weights_settings_are_checked_when_the_recipe_is_read(settings, message):
    values = {
        "model_name_or_path": "timm/efficientnet_lite0",
        "dataset_name": "d",
        "output_dir": "o",
        **settings,
    }
    with pytest.raises(MedftError, match=message):
        parse_recipe(values=values)
