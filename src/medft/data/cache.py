"""`data_cache`: the training images decoded once and held in memory, then augmented batch by
batch where they are to be used (`BatchAugment`), instead of decoded by loader workers every
epoch.

Stored images differ in size. Each is held at its stored size, uint8, at the top left of a
zero canvas as high and as wide as the largest, with its true size beside it; its crop is
drawn within its true size and resized from its stored pixels, as the workers' crop is.
Padding costs memory where sizes vary (the log states the canvas and the bytes before
decoding); resizing each image once to a common cache size would have cost none, but would
have resampled every image twice and changed the shape its crop is drawn on, so that the
device path would no longer make the workers' pictures. A split of greyscale images is held
in one channel (a third of the bytes). Each process holds and draws its own shard of the
split (`shard_rows`).

The cache is filled as the first epoch draws: set-up reads only the images' headers (the
canvas, each image's size) and the labels, and sets the memory aside; each batch's images not
held yet are decoded by loader workers running ahead of training, as the workers' path would
decode them, and stored. Every later draw comes from memory. So the first step does not wait
for the whole split to be decoded (86,524 NIH images: minutes on a few cores), and what a run
draws is the same as if the split had been decoded first.

`auto` holds the split on the training device when it takes at most `AUTO_SHARE` of the
device's free memory, else in RAM when it takes at most that share of the available RAM
(shared by the processes of the machine), else leaves it to the loader workers; asked for
explicitly, a place may give up to `ASKED_SHARE` of its free memory, and a split that does not
fit is an error naming both sizes and the ways out.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import psutil
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import pil_to_tensor

from medft.config import DataArguments, MedftTrainingArguments
from medft.data.batch_augment import BatchAugment
from medft.data.sampling import EpochBatches, data_seed, shard_rows, stream_seed
from medft.data.stream import Batch, OpenAt
from medft.data.transforms import InputSpec, to_rgb, use_one_thread_in_workers
from medft.errors import MedftError
from medft.formats.dicom_settings import DicomSettings
from medft.formats.windowing import to_model_image
from medft.tasks import TaskInfo

logger = logging.getLogger("medft")
AUTO_SHARE = 0.25  # of the free memory of a place that `auto` may fill
ASKED_SHARE = 0.8  # ... that `device` or `ram`, asked for, may fill
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
COLOUR_CHECKED = 0.01  # of the images: colour ones decoded to see whether they are grey
READ_BATCH = 64  # images per task of the loader workers that read the split's headers


@dataclass(frozen=True)
class CachePlan:
    """How a shard of the split is held: its images, channels, and the canvas."""

    images: int
    channels: int
    height: int
    width: int

    @property
    def bytes(self) -> int:
        return self.images * self.channels * self.height * self.width

    def describe(self) -> str:
        return (
            f"{self.images:,} training images as uint8, {self.channels} x {self.height} x "
            f"{self.width} each (their stored size, in a canvas of the largest)"
        )


@dataclass
class ImageCache:
    """A shard of the training split held in memory: pixels (n, channels, height, width),
    each image's stored (height, width), the labels as the loss takes them, the split's rows;
    ``source`` decodes a row onto its canvas (`canvases`), ``filled`` says which are held."""

    pixels: torch.Tensor
    sizes: torch.Tensor
    labels: torch.Tensor
    rows: list[int]
    source: Dataset
    workers: int = 0
    filled: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.filled = torch.zeros(len(self.rows), dtype=torch.bool)

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    def filled_as_drawn(self, parts: list[torch.Tensor]) -> Iterator[None]:
        """Yields once per batch of ``parts`` (positions, in drawing order), after storing the
        images that batch is the first to draw; loader workers decode them, running ahead."""
        fresh = first_sightings(parts, self.filled)
        loader = DataLoader(
            self.source,
            batch_sampler=[positions.tolist() for positions in fresh if len(positions)],
            num_workers=self.workers,
            collate_fn=list,
        )
        decoded = iter(loader)
        for positions in fresh:
            if len(positions):
                block = torch.stack([row["pixels"] for row in next(decoded)])
                self.pixels.index_copy_(
                    0, positions.to(self.pixels.device), block.to(self.pixels.device)
                )
                self.filled[positions] = True
            yield

    def take(self, positions: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Pixels, sizes and labels at ``positions`` (on the cache's device), on ``device``;
        from RAM to a GPU through pinned memory, in copies that do not wait for it."""
        held = (self.pixels, self.sizes, self.labels)
        if self.pixels.device == device or device.type != "cuda":
            return tuple(part.index_select(0, positions).to(device) for part in held)
        taken = []
        for part in held:
            pinned = torch.empty(
                (len(positions), *part.shape[1:]), dtype=part.dtype, pin_memory=True
            )
            torch.index_select(part, 0, positions, out=pinned)
            taken.append(pinned.to(device, non_blocking=True))
        return tuple(taken)


def first_sightings(parts: list[torch.Tensor], filled: torch.Tensor) -> list[torch.Tensor]:
    """Per batch of ``parts``, the positions not ``filled`` that no earlier batch draws."""
    seen, found = filled.clone(), []
    for part in parts:
        part = part.cpu()
        fresh = part[~seen[part]].unique()
        seen[fresh] = True
        found.append(fresh)
    return found


def readable_bytes(count: int) -> str:
    """``count`` bytes in MiB, or GiB from 1 GiB on."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def free_memory(place: torch.device) -> int:
    """Bytes free on a CUDA device, or this process's share of the RAM available."""
    if place.type == "cuda":
        return torch.cuda.mem_get_info(place)[0]
    return psutil.virtual_memory().available // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def place_name(place: torch.device) -> str:
    return str(place) if place.type == "cuda" else "RAM"


def cache_place(
    setting: str, plan: CachePlan, device: torch.device, image_size: int
) -> torch.device | None:
    """Where `data_cache` holds the images: on ``device`` (the training device; off CUDA,
    that is RAM), in RAM (the CPU), or None (loader workers)."""
    on_device = device if device.type == "cuda" else torch.device("cpu")
    if setting == "auto":
        places = list(dict.fromkeys([on_device, torch.device("cpu")]))
        for place in places:
            if plan.bytes <= AUTO_SHARE * free_memory(place):
                return place
        logger.info(
            "data_cache auto: the %s need %s, more than %d%% of the memory free in %s; loader "
            "workers decode them each epoch",
            plan.describe(),
            readable_bytes(plan.bytes),
            100 * AUTO_SHARE,
            " or ".join(place_name(p) for p in places),
        )
        return None
    place = on_device if setting == "device" else torch.device("cpu")
    free = free_memory(place)
    if plan.bytes > ASKED_SHARE * free:
        other = " (or ram)" if place.type == "cuda" else ""
        raise MedftError(
            f"data_cache: {setting} needs {readable_bytes(plan.bytes)} for the "
            f"{plan.describe()}, but {place_name(place)} has {readable_bytes(free)} free, of "
            f"which the cache may take {ASKED_SHARE:.0%}; set data_cache: none{other} (loader "
            f"workers decode each epoch), or store the images at the model's size once "
            f"(medft prepare ... --image-size {image_size})."
        )
    return place


def plan_of(
    shard: Dataset, image_column: str, workers: int, dicom: DicomSettings | None = None
) -> tuple[CachePlan, torch.Tensor]:
    """The canvas and channels a shard needs, and each image's (height, width), from the
    images' headers. A few colour images among grey ones (at most `COLOUR_CHECKED` of them;
    NIH's RGBA files, for one) are decoded: when their three channels are equal, the shard is
    still held in one channel, the same pixels in a third of the memory."""
    stored = shard.cast_column(image_column, ImageFeature(decode=False))

    def headers(batch: dict[str, list]) -> dict[str, list]:
        found = [header(image) for image in batch[image_column]]
        return {
            "height": [f[0] for f in found],
            "width": [f[1] for f in found],
            "grey": [f[2] for f in found],
        }

    heights, widths, colour = [], [], []
    for rows in read(stored.with_transform(headers), workers):
        colour += [len(heights) + at for at, row in enumerate(rows) if not row["grey"]]
        heights += [row["height"] for row in rows]
        widths += [row["width"] for row in rows]
    grey = not colour or (
        len(colour) <= COLOUR_CHECKED * len(shard)
        and all_grey(shard.select(colour), image_column, dicom)
    )
    plan = CachePlan(len(shard), 1 if grey else 3, max(heights), max(widths))
    return plan, torch.tensor(list(zip(heights, widths)), dtype=torch.long)


def all_grey(images: Dataset, image_column: str, dicom: DicomSettings | None) -> bool:
    """Whether every image's three channels, as the model sees them, are equal."""
    for image in images.with_format(None)[image_column]:
        pixels = pil_to_tensor(to_rgb(image, dicom))
        if not (torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2])):
            return False
    return True


def header(stored: dict[str, Any]) -> tuple[int, int, bool]:
    source = io.BytesIO(stored["bytes"]) if stored["bytes"] else stored["path"]
    with PIL.Image.open(source) as image:
        return image.height, image.width, image.mode in GREY_MODES


def read(dataset: Dataset, workers: int) -> Iterator[list[dict[str, Any]]]:
    """``dataset``'s rows in order, a list of them at a time, made by loader workers."""
    loader = DataLoader(dataset, batch_size=READ_BATCH, num_workers=workers, collate_fn=list)
    yield from loader


def decoded_rows(
    shard: Dataset, plan: CachePlan, task: TaskInfo, dicom: DicomSettings | None
) -> Dataset:
    """``shard`` whose rows read as their pixels on the plan's canvas (in loader workers)."""

    def canvases(batch: dict[str, list]) -> dict[str, list]:
        use_one_thread_in_workers()
        return {
            "pixels": [
                on_canvas(stored_pixels(image, plan.channels, dicom), plan)
                for image in batch[task.image_column]
            ]
        }

    return shard.with_transform(canvases)


def stored_pixels(image: PIL.Image.Image, channels: int, dicom: DicomSettings | None):
    """An image as the model is to see it, before augmentation: (channels, height, width)."""
    if channels == 1:
        return pil_to_tensor(to_model_image(image, dicom).convert("L"))
    return pil_to_tensor(to_rgb(image, dicom))


def on_canvas(pixels: torch.Tensor, plan: CachePlan) -> torch.Tensor:
    """``pixels`` at the top left of the plan's (zero) canvas."""
    height, width = pixels.shape[1:]
    canvas = pixels.new_zeros((plan.channels, plan.height, plan.width))
    canvas[:, :height, :width] = pixels
    return canvas


def image_cache(
    train_set: Dataset,
    task: TaskInfo,
    dicom: DicomSettings | None,
    data_args: DataArguments,
    args: MedftTrainingArguments,
    spec: InputSpec,
) -> ImageCache | None:
    """This process's shard of the training split held as `data_cache` says; None when the
    loader workers are to decode it each epoch."""
    if data_args.data_cache == "none":
        return None
    if data_args.auto_augment != "none":  # `device` and `ram` are refused with it when parsed
        logger.info(
            "data_cache auto: none (auto_augment %s runs in the loader workers)",
            data_args.auto_augment,
        )
        return None
    rows = shard_rows(len(train_set), data_seed(args), args.world_size, args.process_index)
    shard = train_set.with_format(None).select(rows)
    workers = args.dataloader_num_workers
    plan, sizes = plan_of(shard, task.image_column, workers, dicom)
    place = cache_place(data_args.data_cache, plan, args.device, round(max(spec.size) * 8 / 7))
    if place is None:
        return None
    logger.info(
        "data_cache %s: decoding the %s into %s as the first epoch draws them (loader workers "
        "running ahead, each image once): %s of %s free",
        data_args.data_cache,
        plan.describe(),
        place_name(place),
        readable_bytes(plan.bytes),
        readable_bytes(free_memory(place)),
    )
    pixels = torch.empty(
        (plan.images, plan.channels, plan.height, plan.width), dtype=torch.uint8, device=place
    )
    labels = torch.stack([task.target(value) for value in shard[task.label_column]])
    source = decoded_rows(shard, plan, task, dicom)
    return ImageCache(pixels, sizes.to(place), labels.to(place), rows, source, workers)


def cached_batches(
    cache: ImageCache,
    batches: EpochBatches,
    augment: BatchAugment,
    device: torch.device,
    seed: int,
    process: int,
) -> OpenAt:
    """Augmented batches of the cache on ``device``: batch k of epoch e from a generator
    seeded by (seed, e, k, process), so a resumed run draws what the first one would have."""
    generator = torch.Generator(device)

    def open_at(epoch: int, batch: int) -> Iterator[Batch]:
        filling, filling_epoch = None, None
        for drawn, index, positions in batches.epochs(epoch, batch, cache.pixels.device):
            if filling_epoch != drawn:  # an epoch begins: fill what it draws, if not held
                filling_epoch, parts = drawn, batches.parts(drawn)[index:]
                filling = None if cache.complete else cache.filled_as_drawn(parts)
            if filling is not None:
                next(filling)
            pixels, sizes, labels = cache.take(positions, device)
            generator.manual_seed(stream_seed(seed, drawn, index, process))
            yield {"pixel_values": augment(pixels, sizes, generator), "labels": labels}

    return open_at
