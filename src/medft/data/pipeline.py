"""The splits a run trains and evaluates on, with their transforms set: what the Trainer reads.

Training images get the recipe's augmentation; every other split (validation, test,
and the training sample scored for the curves) is preprocessed by the model's own
processor, as `pipeline()` will.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher

from medft.config import DataArguments, MedftTrainingArguments
from medft.data.folds import fold_splits
from medft.data.loading import load_training_data, require_splits, task_of
from medft.data.sampling import data_seed
from medft.data.sources import is_streamed, open_stream, refuse_unstreamable
from medft.data.streamed import process_stream
from medft.data.transforms import InputSpec, batch_transform, eval_pixels, train_pixels
from medft.errors import MedftError
from medft.formats.dicom_settings import DicomSettings, dataset_settings, parse_window
from medft.modeling.families import family_of
from medft.prepare.report import prepared_threshold
from medft.public_names import dataset_name
from medft.tasks import TaskInfo

logger = logging.getLogger("medft")
UPSAMPLED, OVERSIZED = 0.9, 2.0  # stored shorter side / model input worth a warning
STREAMED_SAMPLE = 1000  # training images of a stream read up front (see `load_streamed`)


def limit(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    return dataset.shuffle(seed=seed).select(range(min(n, len(dataset)))) if n else dataset


@dataclass
class TrainingData:
    """The splits a run uses, and what they hold."""

    task: TaskInfo
    train_set: Dataset | IterableDataset  # an IterableDataset: this process's part of a stream
    eval_sets: dict[str, Dataset]  # validation first, then test if present
    train_probe: Dataset | None
    train_labels: list
    dicom: DicomSettings | None = None  # how `medft prepare dicom` read the files, if it did
    identity: dict[str, Any] = field(default_factory=dict)  # see `dataset_identity`
    # each split's fingerprint as the run uses it (after folds and sample limits, before any
    # transform): what names its rows, e.g. for the linear probe's cached features
    fingerprints: dict[str, str] = field(default_factory=dict)
    # training images read up front, for what looks at them before or after training (their
    # stored size, the out-of-distribution statistics): the split itself, unless streamed
    train_sample: Dataset | None = None
    train_transform: Any = None  # the training images' transform, set by `set_transforms`

    def __post_init__(self) -> None:
        if self.train_sample is None:
            self.train_sample = self.train_set

    @property
    def streamed(self) -> bool:
        return isinstance(self.train_set, IterableDataset)

    @property
    def validation(self) -> Dataset:
        return next(iter(self.eval_sets.values()))

    def split_sizes(self) -> dict[str, int]:
        """Each split's images (a streamed training split's are not known)."""
        train = {} if self.streamed else {"train": len(self.train_set)}
        return train | {s: len(d) for s, d in self.eval_sets.items()}


def recipe_splits(data_args: DataArguments) -> tuple[dict[str, Dataset], TaskInfo]:
    """The recipe's train, validation and (if there is one) test split as loaded, before
    folds and sample limits, and the task."""
    splits = (data_args.train_split, data_args.eval_split, data_args.test_split)
    dataset, task = load_training_data(
        data_args.dataset_name,
        config=data_args.dataset_config,
        splits=splits,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
    )
    kept = {split: dataset[split] for split in splits if split in dataset}
    refuse_empty_splits(kept, data_args.dataset_name)
    return kept, task


def refuse_empty_splits(splits: dict[str, Dataset], name: str) -> None:
    """Stop before training when a split holds no image: scoring it would fail only after
    training (a tiny dataset, or near-copy groups that took a carved split's every image)."""
    for split, rows in splits.items():
        if not len(rows):
            raise MedftError(
                f"split '{split}' of {name} has no images; prepare the dataset again with more "
                "images, another --val-size / --test-size, or (if near-copy groups emptied it: "
                "see the prepare report) a lower --near-duplicates."
            )


def dataset_identity(splits: dict[str, Dataset], task: TaskInfo) -> dict[str, Any]:
    """What identifies the data a run trains on, without a path: each split's fingerprint as
    loaded (`datasets` changes it with any change of the rows; folds and sample limits are
    recipe settings), its size, and the labels."""
    return {
        "fingerprints": {name: split._fingerprint for name, split in splits.items()},
        "sizes": {name: len(split) for name, split in splits.items()},
        **task.identity,
    }


def load_data(data_args: DataArguments, args: MedftTrainingArguments) -> TrainingData:
    if is_streamed(data_args):
        return load_streamed(data_args, args)
    splits = (data_args.train_split, data_args.eval_split, data_args.test_split)
    as_loaded, task = recipe_splits(data_args)
    parts = dict(as_loaded)
    if data_args.cv_folds:
        train_split, eval_split = splits[:2]
        parts[train_split], parts[eval_split] = fold_splits(
            task,
            parts[train_split],
            parts[eval_split],
            data_args.cv_folds,
            data_args.cv_fold,
            args.seed,
            prepared_threshold(data_args.dataset_name),
        )
        sizes = len(parts[train_split]), len(parts[eval_split])
        logger.info(
            "Fold %d of %d: %d training, %d held-out images",
            data_args.cv_fold,
            data_args.cv_folds,
            *sizes,
        )
    train_set = limit(parts[splits[0]], data_args.max_train_samples, args.seed)
    eval_sets = {
        split: limit(parts[split], data_args.max_eval_samples, args.seed)
        for split in splits[1:]
        if split in parts
    }
    probe_size = args.train_metrics_samples
    probe = limit(train_set, probe_size, args.seed) if probe_size else None
    logger.info(
        "Task: %s, %d labels; %d training images", task.task, len(task.label_names), len(train_set)
    )
    return TrainingData(
        task,
        train_set,
        eval_sets,
        probe,
        list(train_set[task.label_column]),
        dicom_settings(data_args),
        dataset_identity(as_loaded, task),
        {name: rows._fingerprint for name, rows in [(splits[0], train_set), *eval_sets.items()]},
    )


def read_into_memory(stream: IterableDataset, cap: int | None) -> Dataset:
    """The first ``cap`` (default: all) rows of ``stream``, held as stored (encoded)."""
    rows = stream.decode(False)
    return Dataset.from_list(list(rows.take(cap) if cap else rows), features=stream.features)


def load_streamed(data_args: DataArguments, args: MedftTrainingArguments) -> TrainingData:
    """A streamed source: the training split as this process's part of the stream
    (`medft.data.streamed`); validation and test read once into memory as stored (the first
    ``max_eval_samples``), scored as a prepared dataset's; and a sample of ``STREAMED_SAMPLE``
    training images read up front, for what needs some (the train curve's re-scored sample,
    the stored size, the out-of-distribution statistics, the training label counts)."""
    refuse_unstreamable(data_args, args)
    name, train_split = data_args.dataset_name, data_args.train_split
    splits = [s for s in (train_split, data_args.eval_split, data_args.test_split) if s]
    streams = open_stream(name, data_args.dataset_config, splits)
    require_splits(streams, splits[:2], name)
    task = task_of(streams, train_split, data_args.image_column, data_args.label_column)
    eval_sets = {
        split: read_into_memory(streams[split], data_args.max_eval_samples)
        for split in splits[1:]
        if split in streams
    }
    refuse_empty_splits(eval_sets, name)
    seed, buffer = data_seed(args), data_args.shuffle_buffer_size
    sample = read_into_memory(
        streams[train_split].shuffle(seed=seed, buffer_size=buffer), STREAMED_SAMPLE
    )
    columns = [task.image_column, task.label_column]
    train_set = process_stream(
        streams[train_split],
        columns,
        seed,
        buffer,
        args.process_index,
        args.world_size,
        args.dataloader_num_workers,
    )
    source = Hasher.hash([name, data_args.dataset_config, train_split])  # names, not rows
    fingerprints = {train_split: source} | {s: rows._fingerprint for s, rows in eval_sets.items()}
    logger.info(
        "Task: %s, %d labels; streaming the training split of %s (%d shards)",
        task.task,
        len(task.label_names),
        dataset_name(name),
        streams[train_split].num_shards,
    )
    probe_size = args.train_metrics_samples
    return TrainingData(
        task,
        train_set,
        eval_sets,
        limit(sample, probe_size, args.seed) if probe_size else None,
        list(sample[task.label_column]),
        dicom_settings(data_args),
        {"fingerprints": fingerprints, "sizes": {s: len(d) for s, d in eval_sets.items()}}
        | task.identity,
        fingerprints,
        train_sample=sample,
    )


def dicom_settings(data_args: DataArguments) -> DicomSettings | None:
    """How the dataset's DICOM files were read, with the recipe's `dicom_window` (16-bit
    datasets only: 8-bit ones were windowed when prepared)."""
    settings = dataset_settings(data_args.dataset_name)
    if data_args.dicom_window is None:
        return settings
    if settings is None or settings.bit_depth != 16:
        raise MedftError(
            f"dicom_window needs a dataset prepared with `medft prepare dicom --bit-depth 16`; "
            f"{data_args.dataset_name} holds {'8-bit' if settings else 'no DICOM'} images, "
            "windowed when they were prepared. Prepare it again with --bit-depth 16 "
            "(or with --window), or remove dicom_window."
        )
    window = parse_window(data_args.dicom_window, "dicom_window")
    return dataclasses.replace(settings, window=window)


def set_transforms(data: TrainingData, processor: Any, data_args: DataArguments) -> InputSpec:
    """Augmented training images; every other split preprocessed as `pipeline()` will."""
    spec = family_of(processor).input_spec(processor)
    data.train_transform = batch_transform(train_pixels(spec, data_args), data.task, data.dicom)
    if not data.streamed:  # a stream's loader workers apply it (medft.data.streamed)
        data.train_set.set_transform(data.train_transform)
    for part in [*data.eval_sets.values(), *([data.train_probe] if data.train_probe else [])]:
        part.set_transform(batch_transform(eval_pixels(processor), data.task, data.dicom))
    return spec


def input_size_advice(stored: int | None, model_input: tuple[int, int]) -> str | None:
    """A warning when stored images are much smaller (upsampled: compute without detail) or
    much larger (decoded big every epoch) than the model's input; None when they fit."""
    size = max(model_input)
    if stored is None or UPSAMPLED * size <= stored <= OVERSIZED * size:
        return None
    if stored < size:
        return (
            f"the training images are {stored} px on their shorter side but the model takes "
            f"{size} px: each is upsampled {size / stored:.1f}x, which costs compute and adds no "
            f"detail. Train at the stored size (image_size: {stored} in the recipe), or prepare "
            f"the originals at the model's size (medft prepare ... --image-size {size})."
        )
    return (
        f"the training images are {stored} px on their shorter side but the model takes "
        f"{size} px: every epoch decodes them large to shrink them. Store them smaller once "
        f"(medft prepare ... --image-size {round(size * 8 / 7)}), or raise image_size where "
        "the model allows."
    )
