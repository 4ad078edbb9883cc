import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from torchvision.transforms import v2

from medft.config import DataArguments
from medft.data.pipeline import load_data, set_transforms
from medft.data.transforms import DeviceTransform, InputSpec, batch_transform, train_transform
from medft.errors import MedftError
from medft.formats.dicom_settings import DicomSettings, Window
from medft.formats.windowing import OFFSET_16BIT
from medft.modeling import build_model
from medft.parsing import parse_recipe
from medft.tasks import TaskInfo
from tests.helpers import FIXTURES

SPEC = InputSpec(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def augment(**settings) -> DataArguments:
    return DataArguments("data", **settings)


def picture() -> Image.Image:
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, :16] = 200  # bright left half: a flip moves it
    return Image.fromarray(pixels)


def kinds(transform: v2.Compose) -> list[str]:
    return [type(step).__name__ for step in transform.transforms]


def test_default_training_transform_only_crops_and_leaves_uint8():
    transform = train_transform(SPEC, augment())
    assert kinds(transform) == ["PILToTensor", "RandomResizedCrop"]
    assert transform(picture()).dtype == torch.uint8  # a quarter of float32's bytes


def test_every_augmentation_key_adds_its_transform_in_order():
    transform = train_transform(
        SPEC,
        augment(
            horizontal_flip=0.5,
            vertical_flip=0.5,
            rotation_degrees=10,
            zoom=0.2,
            brightness=0.2,
            contrast=0.2,
            auto_augment="randaugment",
            random_erasing=0.25,
        ),
    )
    assert kinds(transform) == [
        "PILToTensor",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandomVerticalFlip",
        "RandomAffine",
        "ColorJitter",
        "RandAugment",
    ]
    affine = transform.transforms[4]
    assert affine.degrees == [-10.0, 10.0] and affine.scale == (0.8, 1.2)
    assert "TrivialAugmentWide" in kinds(
        train_transform(SPEC, augment(auto_augment="trivialaugment"))
    )


def test_the_device_half_normalises_and_erases_each_image_on_its_own():
    batch = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)
    assert torch.equal(DeviceTransform(SPEC)(batch), torch.ones(64, 3, 32, 32))  # (1 - .5) / .5
    erased = DeviceTransform(SPEC, random_erasing=1.0)(batch)
    holes = [(image == 0).all(dim=0) for image in erased]  # erased pixels: 0, the mean
    assert all(hole.any() for hole in holes)  # every image lost a rectangle ...
    assert len({tuple(hole.nonzero()[0].tolist()) for hole in holes}) > 1  # ... not one for all


def test_flip_really_flips():
    no_crop = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0]}
    plain = train_transform(SPEC, augment(**no_crop))(picture())
    flipped = train_transform(SPEC, augment(horizontal_flip=1.0, **no_crop))(picture())
    assert torch.equal(flipped, plain.flip(-1))
    assert plain[:, :, :8].float().mean() > plain[:, :, 24:].float().mean()


def test_augmentation_values_are_checked():
    with pytest.raises(MedftError, match="horizontal_flip must be a probability"):
        augment(horizontal_flip=2)
    with pytest.raises(MedftError, match="crop_scale must be"):
        augment(crop_scale=[0.9, 0.5])
    with pytest.raises(MedftError, match="auto_augment must be one of"):
        augment(auto_augment="augmix")
    with pytest.raises(MedftError, match="zoom must be below 1"):
        augment(zoom=1.5)


def test_sixteen_bit_images_are_windowed_before_the_processor():
    hounsfield = np.array([[-1000, -600], [100, 900]])
    stored = Image.fromarray((hounsfield + OFFSET_16BIT).astype(np.uint16))
    seen: list[Image.Image] = []
    task = TaskInfo(["a", "b"], multi_label=False)
    lung = DicomSettings(window=Window(-600, 1500), bit_depth=16)
    for settings in (lung, None):
        batch_transform(lambda images: seen.extend(images) or images, task, settings)(
            {"image": [stored], "label": [0]}
        )
    windowed, own_range = (np.asarray(image, dtype=float)[..., 0] for image in seen)
    ds = Dataset()  # the window as pydicom applies it to signed 16-bit values
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 1
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    low, high = apply_voi_lut(np.array([-1e9, 1e9]), ds)
    expected = (apply_voi_lut(hounsfield, ds) - low) * 255 / (high - low)
    assert np.abs(windowed - expected).max() <= 0.5
    # without DICOM settings, its own range (min-max), not clipped at 255 as convert() would
    expected = (hounsfield - hounsfield.min()) * 255 / np.ptp(hounsfield)
    assert np.abs(own_range - expected).max() <= 0.5


@pytest.mark.parametrize("recipe", ["tiny_timm.yaml", "tiny_vit.yaml"])
def test_evaluation_batches_hold_exactly_what_the_processor_makes(
    recipe, brain_multiclass, tmp_path
):
    """Validation and test pixels are the model's own processor's, as `pipeline()` makes them
    from the saved model; only training goes through medft's uint8 transform."""
    data_args, model_args, args = parse_recipe(
        FIXTURES / recipe, ["--dataset_name", str(brain_multiclass), "--output_dir", str(tmp_path)]
    )
    data = load_data(data_args, args)
    built = build_model(model_args, data.task)
    set_transforms(data, built.processor, data_args)
    for part in data.eval_sets.values():
        images = part.with_format(None)[:6]["image"]
        assert {image.mode for image in images} >= {"L"}  # greyscale scans among them
        expected = built.processor(
            images=[image.convert("RGB") for image in images], return_tensors="pt"
        )["pixel_values"]
        loaded = torch.stack([part[index]["pixel_values"] for index in range(6)])
        assert loaded.dtype == torch.float32 and torch.equal(loaded, expected)
