"""The device path's augmentation against the loader workers': the same distributions of
every drawn parameter, and the same picture for the same parameters."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from medft.config import DataArguments
from medft.data.batch_augment import BatchAugment
from medft.data.transforms import InputSpec, train_transform

LEVEL = 0.001  # a two-sample test below this level fails (draws are seeded: no flakiness)
DRAWS = 4000
SPEC = InputSpec(size=(40, 48), mean=(0.5,) * 3, std=(0.5,) * 3)
RECIPE = DataArguments(
    "data",
    crop_scale=[0.3, 1.0],
    crop_ratio=[0.6, 1.6],
    horizontal_flip=0.3,
    vertical_flip=0.6,
    rotation_degrees=25,
    zoom=0.2,
    brightness=0.3,
    contrast=0.4,
)
# stored (height, width): one ordinary, one so narrow that most tries fail (the fallback)
SIZES = [(70, 90), (24, 200)]


def worker_steps(recipe: DataArguments) -> dict[str, v2.Transform]:
    steps = train_transform(SPEC, recipe).transforms
    return {type(step).__name__: step for step in steps}


def worker_draws(size: tuple[int, int]) -> dict[str, np.ndarray]:
    """What the loader workers' transforms draw for an image of ``size``, DRAWS times."""
    torch.manual_seed(0)
    steps = worker_steps(RECIPE)
    image = torch.zeros(3, *size, dtype=torch.uint8)
    strip = torch.tensor([[[0, 255]]], dtype=torch.uint8)  # a flip shows on two pixels
    rows = []
    for _ in range(DRAWS):
        crop = steps["RandomResizedCrop"].make_params([image])
        affine = steps["RandomAffine"].make_params([image])
        jitter = steps["ColorJitter"].make_params([image])
        order = jitter["fn_idx"].tolist()
        rows.append(
            (
                crop["top"],
                crop["left"],
                crop["height"],
                crop["width"],
                steps["RandomHorizontalFlip"](strip)[0, 0, 0] == 255,
                steps["RandomVerticalFlip"](strip.mT)[0, 0, 0] == 255,
                affine["angle"],
                affine["scale"],
                jitter["brightness_factor"],
                jitter["contrast_factor"],
                order.index(1) < order.index(0),
            )
        )
    names = (
        "top",
        "left",
        "height",
        "width",
        "hflip",
        "vflip",
        "angle",
        "zoom",
        "brightness",
        "contrast",
        "contrast_first",
    )
    return {name: np.array([row[i] for row in rows], dtype=float) for i, name in enumerate(names)}


def device_draws(size: tuple[int, int]) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([size] * DRAWS)
    params = BatchAugment(SPEC, RECIPE).draw(sizes, generator)
    return {name: value.double().numpy() for name, value in params.items()}


def derived(draws: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The quantities compared: crop area fraction, aspect ratio, where the crop sits."""
    height, width = size
    return draws | {
        "area": draws["height"] * draws["width"] / (height * width),
        "aspect": draws["width"] / draws["height"],
        "top_share": draws["top"] / np.maximum(height - draws["height"], 1),
        "left_share": draws["left"] / np.maximum(width - draws["width"], 1),
    }


@pytest.mark.parametrize("size", SIZES, ids=["70x90", "24x200"])
def test_each_parameter_is_drawn_as_the_loader_workers_draw_it(size):
    workers, device = derived(worker_draws(size), size), derived(device_draws(size), size)
    for name in (
        "area",
        "aspect",
        "top_share",
        "left_share",
        "angle",
        "zoom",
        "brightness",
        "contrast",
    ):
        result = ks_2samp(workers[name], device[name])
        assert result.pvalue > LEVEL, f"{name}: {result}"
    for name in ("hflip", "vflip", "contrast_first"):
        counts = [[values.sum(), DRAWS - values.sum()] for values in (workers[name], device[name])]
        assert chi2_contingency(counts).pvalue > LEVEL, f"{name}: {counts}"
    assert device["hflip"].mean() == pytest.approx(0.3, abs=4 * math.sqrt(0.21 / DRAWS))


def test_a_crop_without_the_settings_that_make_it_random_is_the_whole_image():
    fixed = DataArguments("data", crop_scale=[1.0, 1.0], crop_ratio=[0.5, 2.0])
    params = BatchAugment(SPEC, fixed).draw(torch.tensor([[30, 50], [50, 30]]), torch.Generator())
    assert params["height"].tolist() == [30, 50] and params["width"].tolist() == [50, 30]
    assert params["top"].tolist() == [0, 0] and params["left"].tolist() == [0, 0]


def smooth_picture(height: int, width: int) -> torch.Tensor:
    """An RGB picture with structure at every scale the crops see, none of it symmetric."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    channels = [
        127 + 60 * torch.sin(x / 9) * torch.cos(y / 7) + x * 0.5 - y * 0.3,
        100 + 80 * torch.sin((x + 2 * y) / 13),
        60 + 1.5 * y + 0.8 * x,
    ]
    return torch.stack(channels).clamp(0, 255).round().to(torch.uint8)


CASES = [  # (top, left, height, width, hflip, vflip, angle, zoom, brightness, contrast, c first)
    (6, 10, 50, 64, True, False, 15.0, 0.85, 1.15, 0.8, False),
    (0, 20, 70, 40, False, True, -20.0, 1.1, 0.9, 1.3, True),
]


@pytest.mark.parametrize("case", CASES, ids=["hflip-rotate-zoom-out", "vflip-rotate-zoom-in"])
def test_the_same_parameters_make_the_same_picture_as_the_loader_workers(case):
    top, left, height, width, hflip, vflip, angle, zoom, brightness, contrast, first = case
    picture = smooth_picture(70, 90)
    workers = F.resized_crop(
        picture,
        top,
        left,
        height,
        width,
        list(SPEC.size),
        interpolation=InterpolationMode.BICUBIC,
        antialias=True,
    )
    workers = F.horizontal_flip(workers) if hflip else workers
    workers = F.vertical_flip(workers) if vflip else workers
    workers = F.affine(
        workers,
        angle=angle,
        translate=[0, 0],
        scale=zoom,
        shear=[0, 0],
        interpolation=InterpolationMode.NEAREST,
        fill=0,
    )
    if first:
        workers = F.adjust_brightness(F.adjust_contrast(workers, contrast), brightness)
    else:
        workers = F.adjust_contrast(F.adjust_brightness(workers, brightness), contrast)

    names = (
        "top",
        "left",
        "height",
        "width",
        "hflip",
        "vflip",
        "angle",
        "zoom",
        "brightness",
        "contrast",
        "contrast_first",
    )
    params = {name: torch.tensor([value]) for name, value in zip(names, case)}
    device = BatchAugment(SPEC, RECIPE).apply(picture[None], params)[0]

    assert device.dtype == torch.uint8 and device.shape == workers.shape
    difference = (workers.int() - device.int()).abs()
    # the workers' uint8 resize is fixed-point (one level off here and there, which brightness
    # and contrast may stretch to two); the device's equals torchvision's float resize
    assert difference.max() <= 2 and (difference == 0).float().mean() > 0.8


def test_greyscale_images_come_out_with_three_identical_channels():
    picture = smooth_picture(30, 30)[:1]
    out = BatchAugment(SPEC, RECIPE)(
        picture[None].repeat(4, 1, 1, 1),
        torch.tensor([[30, 30]] * 4),
        torch.Generator().manual_seed(1),
    )
    assert out.shape == (4, 3, *SPEC.size) and torch.equal(out[:, 0], out[:, 2])
