"""`data_cache`: what is held and where, the memory it takes, and batches drawn from it."""

import math
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature

from medft.config import DataArguments
from medft.data import cache as cache_module
from medft.data.batch_augment import BatchAugment
from medft.data.cache import CachePlan, cache_place, cached_batches, image_cache
from medft.data.sampling import EpochBatches, EpochRandomSampler, EpochWeightedSampler
from medft.data.transforms import InputSpec
from medft.errors import MedftError
from medft.tasks import TaskInfo

SPEC = InputSpec(size=(24, 24), mean=(0.5,) * 3, std=(0.5,) * 3)
LEVELS = (60, 130, 220)  # each class's grey level: a batch's pixels tell its labels
TASK = TaskInfo(["a", "b", "c"], multi_label=False)


def levels_split(counts=(30, 10, 6), mode="L") -> Dataset:
    """Images of one grey level per class, of varied sizes (the canvas pads them)."""
    sizes = np.random.default_rng(0).integers(16, 40, size=(sum(counts), 2))
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    images = [
        PIL.Image.new(mode, (int(w), int(h)), (LEVELS[label],) * len(mode))
        for label, (h, w) in zip(labels, sizes)
    ]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=TASK.label_names)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def run_args(processes: int = 1, process: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        seed=3,
        data_seed=None,
        world_size=processes,
        process_index=process,
        dataloader_num_workers=0,
        device=torch.device("cpu"),
    )


def recipe(**settings) -> DataArguments:
    return DataArguments("data", **settings)


AUGMENTED = recipe(
    data_cache="device",
    crop_scale=[0.2, 1.0],
    horizontal_flip=0.5,
    vertical_flip=0.5,
    rotation_degrees=30,
    zoom=0.3,
)


def fill(held) -> None:
    for _ in held.filled_as_drawn([torch.arange(len(held.rows))]):
        pass


def test_the_split_is_held_at_its_stored_size_in_one_channel_when_grey():
    split = levels_split()
    held = image_cache(split, TASK, None, AUGMENTED, run_args(), SPEC)
    fill(held)
    stored = [(image.height, image.width) for image in split["image"]]
    assert held.pixels.dtype == torch.uint8 and held.pixels.shape[1] == 1
    assert held.pixels.shape[2:] == (max(h for h, _ in stored), max(w for _, w in stored))
    assert held.sizes.tolist() == [list(size) for size in stored]
    assert held.labels.tolist() == split["label"] and held.rows == list(range(len(split)))
    height, width = stored[0]
    assert (held.pixels[0, 0, :height, :width] == LEVELS[0]).all()
    assert held.pixels[0].sum() == LEVELS[0] * height * width  # zeros around it
    coloured = levels_split(mode="RGB")
    assert image_cache(coloured, TASK, None, AUGMENTED, run_args(), SPEC).pixels.shape[1] == 3


def test_a_few_colour_images_with_equal_channels_leave_the_split_in_one_channel(monkeypatch):
    monkeypatch.setattr(cache_module, "COLOUR_CHECKED", 0.1)  # of 46 images: up to 4 checked
    split = levels_split()
    images, labels = split["image"], split["label"]

    def held_with(third: PIL.Image.Image):
        rows = {"image": images[:3] + [third] + images[4:], "label": labels}
        return image_cache(Dataset.from_dict(rows, split.features), TASK, None, AUGMENTED,
                           run_args(), SPEC)  # fmt: skip

    grey_rgb = held_with(images[3].convert("RGB"))  # as NIH's RGBA files, flattened
    fill(grey_rgb)
    height, width = images[3].height, images[3].width
    assert grey_rgb.pixels.shape[1] == 1
    assert (grey_rgb.pixels[3, 0, :height, :width] == LEVELS[labels[3]]).all()
    tinted = held_with(PIL.Image.new("RGB", (width, height), (10, 200, 30)))
    assert tinted.pixels.shape[1] == 3


def test_labels_stay_with_their_images_through_sharding_oversampling_and_augmentation():
    split, processes = levels_split(), 2
    weights = 1.0 / torch.bincount(torch.tensor(split["label"])).double()[split["label"]]
    drawn_labels, held_rows = [], []
    for process in range(processes):
        held = image_cache(split, TASK, None, AUGMENTED, run_args(processes, process), SPEC)
        held_rows.append(held.rows)
        batches = EpochBatches(
            EpochWeightedSampler(weights[held.rows], seed=3),
            per_epoch=math.ceil(len(split) / processes),
            batch_size=8,
        )
        stream = cached_batches(
            held,
            batches,
            BatchAugment(SPEC, AUGMENTED),
            torch.device("cpu"),
            seed=3,
            process=process,
        )(0, 0)
        for _ in range(10 * batches.batches_per_epoch):
            batch = next(stream)
            assert batch["pixel_values"].shape[1:] == (3, *SPEC.size)
            for pixels, label in zip(batch["pixel_values"], batch["labels"]):
                shown = pixels[pixels > 0]  # 0: where the rotation or zoom left nothing
                assert len(shown) and (shown - LEVELS[label]).abs().max() <= 1
            drawn_labels += batch["labels"].tolist()
    assert not set(held_rows[0]) & set(held_rows[1])
    assert sorted(held_rows[0] + held_rows[1]) == list(range(len(split)))
    shares = np.bincount(drawn_labels) / len(drawn_labels)  # 30:10:6 held, drawn about evenly
    assert shares == pytest.approx([1 / 3] * 3, abs=4 * math.sqrt(2 / 9 / len(drawn_labels)))


def test_the_cache_is_filled_as_the_first_epoch_draws_each_image_decoded_once(monkeypatch):
    split, decoded = levels_split(), []
    stored_pixels = cache_module.stored_pixels
    monkeypatch.setattr(
        cache_module, "stored_pixels", lambda *a: decoded.append(1) or stored_pixels(*a)
    )
    held = image_cache(split, TASK, None, AUGMENTED, run_args(), SPEC)
    assert not held.filled.any() and not decoded  # set-up reads headers only
    batches = EpochBatches(EpochRandomSampler(held.rows, seed=3), len(split), batch_size=8)
    augment = BatchAugment(SPEC, AUGMENTED)
    stream = cached_batches(held, batches, augment, torch.device("cpu"), seed=3, process=0)
    resumed = stream(0, 2)  # a run resumed two batches into its first epoch
    for _ in range(batches.batches_per_epoch - 2):
        next(resumed)
    skipped = torch.cat(batches.parts(0)[:2])
    assert not held.filled[skipped].any() and held.filled.sum() == len(split) - len(skipped)
    assert len(decoded) == len(split) - len(skipped)
    for _ in range(batches.batches_per_epoch):  # the next epoch fills the rest
        next(resumed)
    assert held.complete and len(decoded) == len(split)
    for position, (image, label) in enumerate(zip(split["image"], split["label"])):
        shown = held.pixels[position, 0, : image.height, : image.width]
        assert (shown == LEVELS[label]).all()
    fresh = cached_batches(held, batches, augment, torch.device("cpu"), seed=3, process=0)(1, 0)
    replayed = next(stream(1, 0))
    assert torch.equal(next(fresh)["pixel_values"], replayed["pixel_values"])
    assert len(decoded) == len(split)  # every later draw from memory


PLAN = CachePlan(images=1000, channels=1, height=512, width=512)  # 250 MiB


@pytest.mark.parametrize("setting", ["device", "ram"])
def test_a_split_that_does_not_fit_is_refused_naming_both_sizes_and_the_ways_out(
    setting, monkeypatch
):
    monkeypatch.setattr(cache_module, "free_memory", lambda place: 100 * 2**20)
    with pytest.raises(MedftError) as raised:
        cache_place(setting, PLAN, torch.device("cpu"), image_size=256)
    message = str(raised.value)
    assert "\n" not in message and "250.0 MiB" in message and "100.0 MiB free" in message
    assert "data_cache: none" in message and "--image-size 256" in message


@pytest.mark.parametrize(
    "free_gpu,free_ram,training_device,chosen",
    [
        (2**40, 2**40, "cuda", "cuda"),
        (2**29, 2**40, "cuda", "cpu"),  # a quarter of 512 MiB is less than 250 MiB: RAM
        (2**29, 2**29, "cuda", None),
        (2**40, 2**40, "cpu", "cpu"),  # off CUDA, the device's memory is RAM
        (2**40, 2**29, "cpu", None),
    ],
)
def test_auto_holds_the_split_where_it_takes_at_most_a_quarter_of_the_free_memory(
    free_gpu, free_ram, training_device, chosen, monkeypatch
):
    free = {"cuda": free_gpu, "cpu": free_ram}
    monkeypatch.setattr(cache_module, "free_memory", lambda place: free[place.type])
    place = cache_place("auto", PLAN, torch.device(training_device), image_size=256)
    assert (place.type if place is not None else None) == chosen


def test_auto_leaves_auto_augment_to_the_loader_workers_and_none_holds_nothing():
    split = levels_split()
    for data_args in (recipe(auto_augment="randaugment"), recipe(data_cache="none")):
        assert image_cache(split, TASK, None, data_args, run_args(), SPEC) is None
    with pytest.raises(MedftError, match="data_cache: device cannot apply auto_augment"):
        recipe(data_cache="device", auto_augment="trivialaugment")
    with pytest.raises(MedftError, match="data_cache must be one of auto, device, ram, none"):
        recipe(data_cache="gpu")
