"""Training batches from a streamed split (`medft.data.sources`), each process reading its own
shards, and the position in the stream that a checkpoint saves.

`process_stream` shuffles the split (the shard order, each pass anew, and the images through
a buffer of ``shuffle_buffer_size``) with one seed on every process, then keeps this
process's part (`datasets.distributed.split_dataset_by_node`); each loader worker reads a
share of it (`WorkerParts`). Each shard is read once when their number is a multiple of
processes x workers; otherwise some are read by every process, which keeps one image in N.
A `StreamLoader` hands the Trainer one pass over the process's part per `iter()`; it has no
length, so the Trainer counts steps (`max_steps`) rather than epochs. Processes end a pass
together, when the first of them runs out (a collective of one number per batch), so that
none waits in a gradient all-reduce for another that stopped: with parts of unequal size,
the images the others had left wait for the next pass.

The position: each batch carries the `IterableDataset.state_dict()` of the worker's part,
taken as the worker made the batch; the loader keeps each worker's last one the Trainer took,
and `save_position` writes them (JSON, a file per process) into the checkpoint. A resumed run
starts each worker where its last batch ended, in the same pass. The images in a shuffle
buffer at that moment are not saved (`datasets` saves the shard and row the buffer had read
up to): a resumed pass skips up to ``shuffle_buffer_size`` images per worker, and repeats
none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader, get_worker_info
from torch.utils.data import IterableDataset as TorchIterableDataset
from transformers.trainer_utils import seed_worker

from medft.data.stream import Batch, on_device
from medft.data.transforms import collate
from medft.errors import MedftError

logger = logging.getLogger("medft")

POSITION_KEY = "stream_position"
POSITION_FILE = "stream_position-{rank}.json"


def position_files(processes: int) -> tuple[str, ...]:
    """The files of a checkpoint that hold the stream's position, one per process."""
    return tuple(POSITION_FILE.format(rank=rank) for rank in range(processes))


def process_stream(
    stream: IterableDataset,
    columns: list[str],
    seed: int,
    buffer: int,
    rank: int,
    processes: int,
    workers: int,
) -> IterableDataset:
    """This process's part of ``stream``, shuffled alike on every process (see the module)."""
    shuffled = stream.select_columns(columns).shuffle(seed=seed, buffer_size=buffer)
    readers = processes * max(workers, 1)
    if readers > 1 and shuffled.num_shards % readers:
        logger.warning(
            "Streaming %d shards with %d process(es) x %d loader worker(s): some shards are read "
            "by every process, which keeps one image in %d; write a multiple of %d shards so "
            "that each is read once.",
            shuffled.num_shards,
            processes,
            max(workers, 1),
            processes,
            readers,
        )
    return split_dataset_by_node(shuffled, rank=rank, world_size=processes)


class WorkerParts(TorchIterableDataset):
    """What a loader worker (or, without workers, the main process) reads: its part of the
    process's shards (`IterableDataset.shard`), from where it stopped when resuming, as
    transformed batches, each with the worker's position after its last row.

    The workers are split here rather than by `datasets` (which splits an IterableDataset
    itself in each worker) so that a saved position is that of the part the worker reads:
    `datasets` 5.2 applies a resumed state to the process's whole stream first, whose state
    holds an entry per shard, and fails on a worker's."""

    def __init__(self, stream, transform, batch_size: int, epoch: int, starts: dict) -> None:
        self.stream, self.transform, self.batch_size = stream, transform, batch_size
        self.epoch, self.starts = epoch, starts

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        part = self.stream.shard(workers, index, contiguous=False) if workers > 1 else self.stream
        part.set_epoch(self.epoch)
        if index in self.starts:
            part.load_state_dict(self.starts[index])
        for rows in part.iter(batch_size=self.batch_size):
            columns = self.transform(rows)
            batch = collate([dict(zip(columns, row)) for row in zip(*columns.values())])
            yield batch | {POSITION_KEY: (index, part.state_dict())}


def as_made(batch: dict[str, Any]) -> dict[str, Any]:
    """The loader's `collate_fn`: the workers make whole batches."""
    return batch


def together(batches: Iterator[Batch], device: torch.device) -> Iterator[Batch]:
    """``batches`` while every process still has one (see the module)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        yield from batches
        return
    while True:
        batch = next(batches, None)
        more = torch.tensor([batch is not None], dtype=torch.int32, device=device)
        dist.all_reduce(more, op=dist.ReduceOp.MIN)
        if not more.item():
            return
        yield batch


class StreamLoader:
    """One pass over this process's part of a streamed split per `iter()` (see the module)."""

    def __init__(
        self,
        stream: IterableDataset,
        transform: Callable[[dict[str, list]], dict[str, list]],
        *,
        batch_size: int,
        device: torch.device,
        rank: int,
        processes: int,
        loader_settings: dict[str, Any],
    ) -> None:
        self.stream, self.transform = stream, transform
        self.batch_size, self.device = batch_size, device
        self.rank, self.processes = rank, processes
        self.settings = loader_settings
        self.workers = loader_settings.get("num_workers", 0)
        self.passes = 0  # completed passes: the next pass's epoch of the stream
        self.positions: dict[int, dict] = {}  # worker -> where its last batch taken ended
        self.starts: dict[int, dict] = {}  # worker -> where it starts (a resumed pass)

    def set_epoch(self, epoch: int) -> None:
        """The Trainer's epochs restart at 0 on resuming; the loader counts its own passes."""

    def loader(self) -> DataLoader:
        parts = WorkerParts(
            self.stream, self.transform, self.batch_size, self.passes, dict(self.starts)
        )
        return DataLoader(
            parts,
            batch_size=None,
            collate_fn=as_made,
            worker_init_fn=partial(seed_worker, num_workers=self.workers, rank=self.rank),
            **self.settings,
        )

    def __iter__(self) -> Iterator[Batch]:
        for batch in together(iter(self.loader()), self.device):
            worker, position = batch.pop(POSITION_KEY)
            self.positions[worker] = position
            yield on_device(batch, self.device)
        self.passes, self.positions, self.starts = self.passes + 1, {}, {}

    def position(self) -> dict[str, Any]:
        return {
            "pass": self.passes,
            "processes": self.processes,
            "workers": self.workers,
            "positions": {str(worker): state for worker, state in self.positions.items()},
        }

    def save_position(self, checkpoint: Path) -> Path:
        checkpoint.mkdir(parents=True, exist_ok=True)
        path = checkpoint / POSITION_FILE.format(rank=self.rank)
        path.write_text(json.dumps(self.position()) + "\n")
        return path

    def resume(self, checkpoint: Path) -> StreamLoader:
        """Start where ``checkpoint`` left this process's stream; one line when it cannot."""
        path = checkpoint / POSITION_FILE.format(rank=self.rank)
        if not path.is_file():
            raise MedftError(
                f"checkpoint {checkpoint.name} holds no stream position for process {self.rank} "
                f"({path.name}); resume from another checkpoint, or set overwrite_output_dir "
                "to start over."
            )
        saved = json.loads(path.read_text())
        if (saved["processes"], saved["workers"]) != (self.processes, self.workers):
            raise MedftError(
                f"checkpoint {checkpoint.name} was streamed by {saved['processes']} process(es) "
                f"with dataloader_num_workers {saved['workers']}; resume with the same (each "
                "worker's position is its own shards'), or set overwrite_output_dir to start over."
            )
        self.passes = saved["pass"]
        self.starts = {int(worker): state for worker, state in saved["positions"].items()}
        logger.info(
            "Streaming resumes in pass %d where %s left it (%d worker position(s))",
            self.passes + 1,
            checkpoint.name,
            len(self.starts),
        )
        return self
