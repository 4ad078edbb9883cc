"""`medft show-augmentations`: a grid of training images as the model sees them.

Each row is one training image: as evaluation preprocesses it, then several
draws of the recipe's training augmentation. With MixUp or CutMix on, a last
row shows one mixed batch of those images. The figure is drawn by `medft.evaluation.plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medft.config import DataArguments, ModelArguments
from medft.data.loading import load_training_data
from medft.data.mixing import BatchMixer
from medft.data.pipeline import dicom_settings
from medft.data.transforms import (
    DeviceTransform,
    eval_pixels,
    to_picture,
    to_rgb,
    train_transform,
)
from medft.evaluation.plots import plot_augmentation_grid
from medft.modeling.backbones import build_processor
from medft.modeling.families import family_of


def augmentation_grid(
    data_args: DataArguments,
    model_args: ModelArguments,
    output: str | Path,
    *,
    images: int = 5,
    versions: int = 6,
    seed: int = 0,
) -> Path:
    """Save the grid to ``output`` (PNG) and return its path."""
    dataset, task = load_training_data(
        data_args.dataset_name,
        config=data_args.dataset_config,
        splits=(data_args.train_split, data_args.eval_split),
        image_column=data_args.image_column,
        label_column=data_args.label_column,
    )
    train = dataset[data_args.train_split]
    rows = np.random.default_rng(seed).choice(
        len(train), size=min(images, len(train)), replace=False
    )
    processor = build_processor(model_args)
    spec = family_of(processor).input_spec(processor)
    augment, on_device = (
        train_transform(spec, data_args),
        DeviceTransform(spec, data_args.random_erasing),
    )
    torch.manual_seed(seed)

    examples = [train[int(i)] for i in rows]
    dicom = dicom_settings(data_args)
    pictures = [to_rgb(e[task.image_column], dicom) for e in examples]
    shown = list(eval_pixels(processor)(pictures))  # what evaluation and pipeline() see
    drawn = [list(on_device(torch.stack([augment(p) for _ in range(versions)]))) for p in pictures]
    grid = [[s, *d] for s, d in zip(shown, drawn)]
    titles = [task.label_text(e[task.label_column]) for e in examples]

    mixing = data_args.mixup_alpha or data_args.cutmix_alpha
    if mixing and len(pictures) > 1:
        batch = torch.stack([d[0] for d in drawn][: len(drawn) // 2 * 2])
        mixer = BatchMixer(task, data_args.mixup_alpha, data_args.cutmix_alpha, 1.0)
        mixed, _ = mixer(batch.clone(), torch.zeros(len(batch), dtype=torch.long))
        grid.append([*mixed, *[None] * (versions + 1 - len(mixed))])
        titles.append("MixUp / CutMix batch")

    pictures_grid = [
        [None if cell is None else to_picture(cell, spec) for cell in cells] for cells in grid
    ]
    title = f"Training augmentation, {spec.size[0]}x{spec.size[1]} inputs"
    return plot_augmentation_grid(pictures_grid, titles, title, Path(output))
