"""Which training images each step takes: each epoch's draw is a function of (seed, epoch), and
the epochs follow each other in one endless stream of batches.

Drawing epoch e from a generator seeded by (seed, e), rather than from one generator that
runs on, makes the draw independent of what came before: one iterator can run across the
epochs, a resumed run draws what the interrupted one would have, and every process draws
alike. Each process trains on its own fixed part of the split (`shard_rows`), so that a
process holding images in memory holds only those it draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler


def data_seed(args: Any) -> int:
    """The seed of the training data's order: TrainingArguments' data_seed, else its seed."""
    return args.seed if args.data_seed is None else args.data_seed


def stream_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from a few integers (numpy's `SeedSequence`), e.g. (seed,
    epoch): neighbouring keys give unrelated streams."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


class EpochSeeded:
    """A torch sampler whose draw for epoch e comes from a generator seeded by (seed, e)."""

    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch))
        return super().__iter__()


class EpochRandomSampler(EpochSeeded, RandomSampler):
    """Each epoch a permutation of the rows."""

    def __init__(self, rows: Sized, seed: int) -> None:
        super().__init__(rows)
        self.seed = seed


class EpochWeightedSampler(EpochSeeded, WeightedRandomSampler):
    """Each epoch as many rows as there are, drawn with replacement by weight (oversampling)."""

    def __init__(self, weights: torch.Tensor, seed: int) -> None:
        super().__init__(weights, len(weights), replacement=True)
        self.seed = seed


def shard_rows(size: int, seed: int, processes: int, index: int) -> list[int]:
    """The rows of a ``size``-row split that process ``index`` of ``processes`` trains on: a
    fixed random part (prepared splits may be sorted by class), in row order."""
    if processes == 1:
        return list(range(size))
    generator = torch.Generator().manual_seed(stream_seed(seed))
    return sorted(torch.randperm(size, generator=generator)[index::processes].tolist())


class EpochBatches(Sampler[list[int]]):
    """A process's batches, epoch after epoch without end, from ``start`` (epoch, batch): each
    epoch the sampler's draw over the process's shard, repeated from its beginning up to
    ``per_epoch`` positions (so that every process takes as many steps), cut into batches, the
    last one short unless ``drop_last``. Iterating yields lists of shard positions (a
    `DataLoader`'s ``batch_sampler``); `epochs` yields tensors."""

    def __init__(
        self, sampler: Any, per_epoch: int, batch_size: int, drop_last: bool = False
    ) -> None:
        self.sampler, self.per_epoch = sampler, per_epoch
        self.batch_size, self.drop_last = batch_size, drop_last
        self.start = (0, 0)

    @property
    def batches_per_epoch(self) -> int:
        whole = self.per_epoch // self.batch_size
        return whole if self.drop_last else math.ceil(self.per_epoch / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s positions, ``per_epoch`` of them."""
        self.sampler.set_epoch(epoch)
        drawn = torch.tensor(list(self.sampler), dtype=torch.long)
        return drawn[torch.arange(self.per_epoch) % len(drawn)]

    def parts(self, epoch: int) -> list[torch.Tensor]:
        """Epoch ``epoch``'s batches of positions."""
        return list(self.order(epoch).split(self.batch_size)[: self.batches_per_epoch])

    def epochs(
        self, epoch: int, batch: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(epoch, batch index, positions on ``device``) from batch ``batch`` of ``epoch`` on;
        each epoch's order goes to the device in one copy that does not wait for it."""
        device = torch.device(device)
        while True:
            order = self.order(epoch)
            if device.type == "cuda":
                order = order.pin_memory().to(device, non_blocking=True)
            parts = order.split(self.batch_size)[: self.batches_per_epoch]
            for index in range(batch, len(parts)):
                yield epoch, index, parts[index]
            epoch, batch = epoch + 1, 0

    def __iter__(self) -> Iterator[list[int]]:
        for _, _, positions in self.epochs(*self.start):
            yield positions.tolist()
