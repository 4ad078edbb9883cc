"""Training batches from a streamed split (`medft.data.sources`), each process reading its own
shards, and the position in the stream that a checkpoint saves.

`process_stream` shuffles the split (the shard order, and the images through a buffer of
``shuffle_buffer_size``) with one seed on every process, then keeps this process's part
(`datasets.distributed.split_dataset_by_node`: whole shards when their number is a multiple
of the processes, else one image in N of every shard). A `StreamLoader` hands the Trainer one
pass over that part per `iter()`, from loader workers that read shards of their own; it has
no length, so the Trainer counts steps (`max_steps`) rather than epochs. Processes end a pass
together, when the first of them runs out (a collective of one number per batch), so that
none waits in a gradient all-reduce for another that stopped.

The position: each batch carries the `IterableDataset.state_dict()` of the worker that made
it, taken there as the batch is collated; the loader keeps the last of each worker's that the
Trainer took, and `save_position` writes them (JSON, a file per process) into the checkpoint.
A resumed run starts each worker where its last batch ended, in the same pass. The images in
a shuffle buffer at that moment are not saved (`datasets` saves the shard and row the buffer
had read up to): a resumed pass skips up to ``shuffle_buffer_size`` images per worker and
repeats none.
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
    stream: IterableDataset, columns: list[str], seed: int, buffer: int, rank: int, processes: int
) -> IterableDataset:
    """This process's part of ``stream``, shuffled alike on every process (see the module)."""
    shuffled = stream.select_columns(columns).shuffle(seed=seed, buffer_size=buffer)
    if processes > 1 and shuffled.num_shards % processes:
        logger.warning(
            "Streaming %d shards over %d processes: each process reads every shard and keeps one "
            "image in %d; write a multiple of %d shards so that each reads only its own.",
            shuffled.num_shards,
            processes,
            processes,
            processes,
        )
    return split_dataset_by_node(shuffled, rank=rank, world_size=processes)


class PositionedBatches:
    """The loader's `collate_fn`: rows -> the transformed batch, with the position of the
    stream that made it (in a worker: that worker's copy) after its last row."""

    def __init__(self, transform: Callable[[dict[str, list]], dict[str, list]], stream) -> None:
        self.transform, self.stream = transform, stream

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        columns = self.transform({column: [row[column] for row in rows] for column in rows[0]})
        batch: dict[str, Any] = collate([dict(zip(columns, row)) for row in zip(*columns.values())])
        worker = get_worker_info()
        stream = worker.dataset if worker is not None else self.stream
        batch[POSITION_KEY] = (worker.id if worker is not None else 0, stream.state_dict())
        return batch


def start_worker(worker_id: int, *, starts: dict[int, dict], workers: int, rank: int) -> None:
    """Seed a worker as the Trainer seeds its own, and start it where it stopped (resuming)."""
    seed_worker(worker_id, num_workers=workers, rank=rank)
    if worker_id in starts:
        get_worker_info().dataset.load_state_dict(starts[worker_id])


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
        self.stream.set_epoch(self.passes)
        if not self.workers and 0 in self.starts:
            self.stream.load_state_dict(self.starts[0])
        return DataLoader(
            self.stream,
            batch_size=self.batch_size,
            collate_fn=PositionedBatches(self.transform, self.stream),
            worker_init_fn=partial(
                start_worker, starts=self.starts, workers=self.workers, rank=self.rank
            ),
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
