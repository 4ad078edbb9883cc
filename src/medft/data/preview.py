"""`medft show-augmentations`: a grid of training images as the model sees them.

Each row is one training image: as evaluation preprocesses it, then several
draws of the recipe's training augmentation. With MixUp or CutMix on, a last
row shows one mixed batch of those images.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from medft.config import DataArguments, ModelArguments  # noqa: E402
from medft.data.loading import TaskInfo, load_training_data  # noqa: E402
from medft.data.mixing import BatchMixer  # noqa: E402
from medft.data.transforms import (  # noqa: E402
    InputSpec,
    eval_pixels,
    input_spec,
    to_rgb,
    train_transform,
)
from medft.modeling.backbones import build_processor  # noqa: E402


def to_picture(pixels: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """A normalised CHW tensor back to an HWC image in [0, 1]."""
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (pixels * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def label_text(label: int | list[int], task: TaskInfo) -> str:
    if task.multi_label:
        return ", ".join(task.label_names[i] for i in label) or "no finding"
    return task.label_names[label]


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
    spec = input_spec(processor)
    augment = train_transform(spec, data_args)
    torch.manual_seed(seed)

    examples = [train[int(i)] for i in rows]
    pictures = [to_rgb(e[task.image_column]) for e in examples]
    shown = list(eval_pixels(processor)(pictures))  # what evaluation and pipeline() see
    drawn = [[augment(p) for _ in range(versions)] for p in pictures]
    grid = [[s, *d] for s, d in zip(shown, drawn)]
    titles = [label_text(e[task.label_column], task) for e in examples]

    mixing = data_args.mixup_alpha or data_args.cutmix_alpha
    if mixing and len(pictures) > 1:
        batch = torch.stack([d[0] for d in drawn][: len(drawn) // 2 * 2])
        mixer = BatchMixer(task, data_args.mixup_alpha, data_args.cutmix_alpha, 1.0)
        mixed, _ = mixer(batch.clone(), torch.zeros(len(batch), dtype=torch.long))
        grid.append([*mixed, *[None] * (versions + 1 - len(mixed))])
        titles.append("MixUp / CutMix batch")

    columns = versions + 1
    figure, axes = plt.subplots(len(grid), columns, figsize=(1.6 * columns, 1.7 * len(grid)))
    axes = np.atleast_2d(axes)
    for row, (cells, title) in enumerate(zip(grid, titles)):
        for column, cell in enumerate(cells[:columns]):
            axis = axes[row, column]
            axis.axis("off")
            if cell is not None:
                axis.imshow(to_picture(cell, spec))
        axes[row, 0].set_title(f"{title}\n(as evaluated)", fontsize=7, loc="left")
    figure.suptitle(f"Training augmentation, {spec.size[0]}x{spec.size[1]} inputs", fontsize=9)
    figure.tight_layout()
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
