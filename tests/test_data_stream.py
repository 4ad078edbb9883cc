"""Epoch draws seeded by the epoch, shards, and one live iterator for all epochs."""

import torch
from torch.utils.data import DataLoader

from medft.data.sampling import (
    EpochBatches,
    EpochRandomSampler,
    EpochWeightedSampler,
    shard_rows,
)
from medft.data.stream import EpochStream, loader_batches

ROWS = list(range(10))


class CountingLoader(DataLoader):
    """A DataLoader that counts how often its iterator is (re)started."""

    starts = 0

    def __iter__(self):
        self.starts += 1
        return super().__iter__()


def collate(rows: list[int]) -> dict[str, torch.Tensor]:
    return {"rows": torch.tensor(rows)}


def stream_of(workers: int = 0, per_epoch: int = 10, batch_size: int = 4):
    batches = EpochBatches(EpochRandomSampler(ROWS, seed=5), per_epoch, batch_size)
    loader = CountingLoader(
        ROWS,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=bool(workers),
    )
    stream = EpochStream(
        loader_batches(loader, batches, torch.device("cpu")), batches.batches_per_epoch, ROWS
    )
    return stream, loader, batches


def epoch_of(stream: EpochStream, epoch: int) -> list[list[int]]:
    """One epoch as the Trainer takes it: set_epoch, then iter."""
    stream.set_epoch(epoch)
    return [batch["rows"].tolist() for batch in stream]


def expected(batches: EpochBatches, epoch: int) -> list[list[int]]:
    return [part.tolist() for part in batches.order(epoch).split(batches.batch_size)]


def test_one_iterator_serves_every_epoch_each_drawn_from_its_own_seed():
    stream, loader, batches = stream_of(workers=1)
    stream.start()
    epochs = [epoch_of(stream, epoch) for epoch in range(3)]
    assert loader.starts == 1  # started once, never restarted at an epoch's start
    assert epochs == [expected(batches, epoch) for epoch in range(3)]
    assert [len(batch) for batch in epochs[0]] == [4, 4, 2] and len(stream) == 3
    assert all(sorted(sum(epoch, [])) == ROWS for epoch in epochs)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = EpochRandomSampler(ROWS, seed=5)
    again.set_epoch(1)
    assert list(again) == sum(epochs[1], [])  # what epoch 1 draws does not depend on epoch 0


def test_a_resumed_epoch_starts_where_the_first_run_was_and_the_stream_runs_on():
    first, _, batches = stream_of()
    uninterrupted = [epoch_of(first, epoch) for epoch in range(3)]
    resumed, loader, _ = stream_of()
    view = resumed.skipping(2)  # what the Trainer's get_resumed_dataloader gets back
    assert len(view) == 1
    assert epoch_of(view, 1) == uninterrupted[1][2:]
    assert epoch_of(resumed, 2) == uninterrupted[2] and loader.starts == 1


def test_an_epoch_left_early_restarts_the_stream_at_the_next_epoch():
    stream, loader, batches = stream_of()
    stream.set_epoch(0)
    next(iter(stream))  # e.g. a callback stopped the epoch after one step
    assert epoch_of(stream, 1) == expected(batches, 1) and loader.starts == 2


def test_every_process_takes_as_many_images_from_its_own_fixed_shard():
    shards = [shard_rows(11, seed=1, processes=3, index=index) for index in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert shards == [shard_rows(11, seed=1, processes=3, index=index) for index in range(3)]
    assert shards[0] != [0, 1, 2, 3]  # not the first rows: a split may be sorted by class
    short = min(shards, key=len)
    batches = EpochBatches(EpochRandomSampler(short, seed=1), per_epoch=4, batch_size=3)
    order = batches.order(0)
    assert len(order) == 4 and order[3] == order[0]  # topped up from its own start
    assert batches.batches_per_epoch == 2
    assert EpochBatches(batches.sampler, 4, 3, drop_last=True).batches_per_epoch == 1


def test_weighted_draws_follow_the_weights_and_the_epoch():
    weights = torch.tensor([1.0, 0.0, 3.0])
    sampler = EpochWeightedSampler(weights, seed=2)
    draws = []
    for epoch in range(300):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    counts = torch.bincount(torch.tensor(draws), minlength=3)
    assert counts[1] == 0 and abs(counts[2] / len(draws) - 0.75) < 0.05
    sampler.set_epoch(7)
    assert list(sampler) == draws[21:24]
