"""The training batches as the Trainer iterates them: one epoch per `iter()`, all epochs from
one live iterator.

The Trainer (transformers 5) calls ``iter(train_dataloader)`` at each epoch's start, which
restarts a `DataLoader`: its workers build the new epoch's first batch from nothing while the
accelerator waits (~250 ms at each epoch's first step of a ResNet-50 on an H200, against 35 ms
for any other). An `EpochStream` hands out, at each `iter()`, the next epoch's batches from
one iterator over an endless stream of epochs (`EpochBatches`), so the loader keeps producing
across the boundary (and through the evaluation between epochs) and the first step of an
epoch waits no longer than any other. The stream restarts, at the epoch and batch asked for,
only when the Trainer asks for another place than the one it is at: a run resumed from a
checkpoint (`skipping`, for the Trainer's `get_resumed_dataloader`) or an epoch left early.
The Trainer sees an object with the length of one epoch, `set_epoch`, and a `dataset`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from medft.data.sampling import EpochBatches

Batch = dict[str, torch.Tensor]
OpenAt = Callable[[int, int], Iterator[Batch]]  # (epoch, batch) -> the batches from there on


@dataclass
class LiveIterator:
    """The one iterator every epoch's view takes from, and where it is: the (epoch, batch) of
    the next batch it gives."""

    batches: Iterator[Batch] | None = None
    at: tuple[int, int] | None = None


class EpochStream:
    """One epoch of training batches per `iter()`, taken from an iterator that lives across
    epochs (see the module's docstring)."""

    def __init__(self, open_at: OpenAt, batches_per_epoch: int, dataset: Any) -> None:
        self.open_at, self.batches_per_epoch = open_at, batches_per_epoch
        self.dataset = dataset  # the Trainer counts the examples of the run from it
        self.epoch = self.skip = 0
        self.live = LiveIterator()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start(self) -> EpochStream:
        """Set the stream going at the first epoch now (loader workers start decoding while
        the Trainer prepares the model and optimizer)."""
        self.live.batches, self.live.at = self.open_at(0, 0), (0, 0)
        return self

    def skipping(self, batches: int) -> EpochStream:
        """A view on the same stream whose epoch starts ``batches`` batches in."""
        view = copy.copy(self)
        view.skip = batches
        return view

    def __iter__(self) -> Iterator[Batch]:
        live, here = self.live, (self.epoch, self.skip)
        if live.at != here:
            live.batches, live.at = self.open_at(*here), here
        for index in range(self.skip, self.batches_per_epoch):
            batch = next(live.batches)
            following = index + 1
            live.at = (
                (self.epoch, following)
                if following < self.batches_per_epoch
                else (self.epoch + 1, 0)
            )
            yield batch


def on_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` on ``device``; from pinned memory the copy does not wait for the device."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def loader_batches(loader: DataLoader, batches: EpochBatches, device: torch.device) -> OpenAt:
    """Batches of ``loader``, whose batch sampler is ``batches``, on ``device``. Opening
    restarts the loader's iterator (its persistent workers stay)."""

    def open_at(epoch: int, batch: int) -> Iterator[Batch]:
        batches.start = (epoch, batch)
        return (on_device(made, device) for made in iter(loader))

    return open_at
