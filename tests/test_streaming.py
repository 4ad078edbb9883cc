"""Streamed training data: WebDataset and Parquet shards (and a Hub stream) read as the run
trains, each process its own shards, every image once per pass, resumed where a checkpoint
left the stream; `medft prepare --format webdataset`; and the settings a stream refuses."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datasets import DatasetInfo, Image, load_dataset, load_from_disk

from medft.config.prepare import BrainTumorArguments
from medft.data import sources
from medft.data.loading import load_training_data
from medft.data.pipeline import load_data
from medft.data.sources import open_stream
from medft.data.streamed import StreamLoader, process_stream
from medft.errors import MedftError
from medft.parsing import parse_recipe
from medft.prepare import prepare_dataset
from medft.prepare.private import private_file
from medft.prepare.webdataset import write_split
from medft.training.run import train
from tests.helpers import FIXTURES, REPO, on_two_cpu_processes

TRAIN_IMAGES, SHARDS = 160, 8  # equal shards: each process's part holds as many images


@pytest.fixture(scope="module")
def webdataset_prepared(brain_raw, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("streamed") / "brain2-wds"
    prepare_dataset(
        BrainTumorArguments(
            output=output,
            source=brain_raw,
            task="binary",
            num_proc=1,
            format="webdataset",
            shard_size=32,
        )
    )
    return output


@pytest.fixture(scope="module")
def shards(brain_binary, tmp_path_factory) -> dict[str, Path]:
    """The prepared binary dataset as Parquet and as WebDataset shards: its training split's
    first images in `SHARDS` equal shards, validation and test in one each."""
    root = tmp_path_factory.mktemp("shards")
    dataset = load_from_disk(str(brain_binary))
    for split, rows in dataset.items():
        rows, count = (rows.select(range(TRAIN_IMAGES)), SHARDS) if split == "train" else (rows, 1)
        rows = rows.add_column("number", list(range(len(rows))))  # names each image
        (root / "parquet" / split).mkdir(parents=True)
        for index in range(count):
            part = rows.shard(count, index, contiguous=True)
            part.to_parquet(str(root / "parquet" / split / f"{split}-{index:05d}.parquet"))
        write_split(rows, root / "webdataset" / split, split, len(rows) // count, lambda n: None)
    DatasetInfo(features=rows.features).write_to_directory(str(root / "webdataset"))
    return {"parquet": root / "parquet", "webdataset": root / "webdataset"}


def numbers(batch: dict[str, list]) -> dict[str, list]:
    """A training transform that keeps only each image's number."""
    return {
        "pixel_values": [torch.tensor(number) for number in batch["number"]],
        "labels": [torch.tensor(label) for label in batch["label"]],
    }


def ids_of(batches) -> list[int]:
    return [i for batch in batches for i in batch["pixel_values"].tolist()]


def read_passes(
    source: str, buffer: int, rank: int, processes: int, workers: int, folder: Path
) -> tuple[list[list[int]], list[int], list[int]]:
    """One process's reading: two whole passes, then a pass stopped after three batches with
    its position saved, and that pass resumed by a new loader."""
    train = open_stream(source, None, ["train"])["train"]
    stream = process_stream(train, ["number", "label"], 7, buffer, rank, processes, workers)

    def loader() -> StreamLoader:
        return StreamLoader(
            stream,
            numbers,
            batch_size=8,
            device=torch.device("cpu"),
            rank=rank,
            processes=processes,
            loader_settings={"num_workers": workers},
        )

    whole = loader()
    passes = [ids_of(whole), ids_of(whole)]
    stopped = loader()
    batches = iter(stopped)
    before = ids_of(next(batches) for _ in range(3))
    stopped.save_position(folder)
    batches.close()  # its workers stop, as a killed run's would
    return passes, before, ids_of(loader().resume(folder))


def read_in_a_group(rank: int, source: str, buffer: int, folder: str, port: int, results):
    """`read_passes` as one of two processes (gloo) that end each pass together."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results.put((rank, *read_passes(source, buffer, rank, 2, 0, Path(folder))))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_passes(found: dict[int, tuple], buffer: int) -> None:
    """Each pass: every image once across the processes, each reading whole shards of its
    own; each resumed pass: nothing repeated, nothing lost but a shuffle buffer's worth."""
    per_shard = TRAIN_IMAGES // SHARDS
    for number in range(2):
        seen = [found[rank][0][number] for rank in range(2)]
        for part in seen:  # whole shards, half of them each
            shards_read = {image // per_shard for image in part}
            assert len(part) == per_shard * len(shards_read) == TRAIN_IMAGES // 2
        assert set(seen[0]).isdisjoint(seen[1])
        assert set(seen[0]) | set(seen[1]) == set(range(TRAIN_IMAGES))
    if buffer > 1:  # each pass reshuffled (Parquet shards are read in turns, a row of each)
        assert found[0][0][0] != found[0][0][1]
    for rank in range(2):
        passes, before, after = found[rank]
        assert len(before) == 24 and set(before).isdisjoint(after)  # nothing repeated
        assert set(before) | set(after) <= set(passes[0])  # this process's shards only
        lost = len(set(passes[0]) - set(before) - set(after))
        assert lost == 0 if buffer == 1 else lost <= buffer * 2  # a buffer's worth per worker


@pytest.mark.parametrize("kind, buffer", [("parquet", 1), ("webdataset", 16)])
def test_two_processes_see_every_image_once_per_pass_and_resume_without_repeats(
    kind, buffer, shards, tmp_path
):
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(
            target=read_in_a_group,
            args=(rank, str(shards[kind]), buffer, str(tmp_path), port, results),
        )
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    found = {}
    for _ in processes:
        rank, *reading = results.get(timeout=150)
        found[rank] = reading
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    check_passes(found, buffer)


def test_loader_workers_share_a_process_part_and_resume_each_where_it_stopped(shards, tmp_path):
    """Two processes' parts read one after the other, each by two loader workers (Parquet's
    workers take 5 s each to stop, at every pass: `datasets` 5.2's reading threads)."""
    found = {
        rank: read_passes(str(shards["webdataset"]), 16, rank, 2, 2, tmp_path / str(rank))
        for rank in range(2)
    }
    check_passes(found, 16)


def test_prepare_writes_webdataset_shards_that_stream_back_intact(
    webdataset_prepared, brain_binary
):
    output = webdataset_prepared
    assert not (output / "dataset_dict.json").exists() and not list(output.rglob("*.arrow"))
    assert private_file(output).is_file()  # the paths stay beside the folder
    info = (output / "dataset_info.json").read_text()
    assert str(output.parent) not in info and "brain_raw" not in info
    report = json.loads((output / "prepare_report.json").read_text())
    assert report["options"]["format"] == "webdataset"
    prepared = load_from_disk(str(brain_binary))
    splits = list(prepared)
    streams = open_stream(str(output), None, splits)
    for split in splits:
        shards = sorted((output / split).glob("*.tar"))
        assert len(shards) == -(-len(prepared[split]) // 32)
        rows = list(streams[split].decode(False))
        expected = prepared[split].cast_column("image", Image(decode=False))
        assert streams[split].features == prepared[split].features
        assert sorted(row["label"] for row in rows) == sorted(expected["label"])
        assert sorted(row["image"]["bytes"] for row in rows) == sorted(
            image["bytes"] for image in expected["image"]
        )
        assert [row["sequence"] for row in rows] == expected["sequence"]  # in the same order
        assert [row["image"]["bytes"] for row in rows] == [i["bytes"] for i in expected["image"]]


def streamed_recipe(dataset: Path, output: Path, *overrides: str):
    return parse_recipe(
        FIXTURES / "tiny_vit.yaml",
        ["--dataset_name", str(dataset), "--output_dir", str(output), "--max_steps", "4",
         "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps",
         "--save_steps", "2", *overrides],
    )  # fmt: skip


def test_a_streamed_run_trains_and_resumes_where_its_checkpoint_left_the_stream(
    webdataset_prepared, tmp_path, caplog
):
    output = tmp_path / "model"
    first = train(*streamed_recipe(webdataset_prepared, output))
    assert "train" not in first.split_sizes and first.split_sizes["test"] > 0
    position = json.loads((output / "checkpoint-2" / "stream_position-0.json").read_text())
    assert position["pass"] == 0 and list(position["positions"]) == ["0"]
    assert (output / "model.safetensors").is_file() and (output / "README.md").is_file()
    shutil.rmtree(output / "checkpoint-4")  # as if killed before its second checkpoint
    with caplog.at_level(logging.INFO, logger="medft"):
        train(*streamed_recipe(webdataset_prepared, output))
    assert "Streaming resumes in pass 1 where checkpoint-2 left it" in caplog.text
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4


def test_two_processes_train_through_accelerate_across_a_pass_and_resume(shards, tmp_path):
    """Two processes (gloo) of 80 images each, each read by two loader workers of 40, 16 a
    batch: a pass is 6 steps (16, 16 and 8 from each worker), so step 7 is the next pass's
    first; the run resumed from step 4 picks up the stream there."""
    output = tmp_path / "model"
    arguments = [str(REPO / "src" / "finetune.py"), str(FIXTURES / "tiny_vit.yaml"),
                 "--dataset_name", str(shards["webdataset"]), "--output_dir", str(output),
                 "--max_steps", "8", "--eval_strategy", "steps", "--eval_steps", "4",
                 "--save_strategy", "steps", "--save_steps", "4",
                 "--dataloader_num_workers", "2"]  # fmt: skip
    on_two_cpu_processes(*arguments, timeout=300)
    for step, in_pass in [(4, 0), (8, 1)]:
        for rank in range(2):
            saved = output / f"checkpoint-{step}" / f"stream_position-{rank}.json"
            assert json.loads(saved.read_text())["pass"] == in_pass
    assert (output / "test_results.json").is_file()
    shutil.rmtree(output / "checkpoint-8")
    result = on_two_cpu_processes(*arguments, timeout=300)
    assert "Streaming resumes in pass 1 where checkpoint-4 left it" in result.stdout
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 8


def test_a_hub_stream_is_loaded_as_the_hub_client_streams_it(
    shards, brain_binary, tmp_path, monkeypatch
):
    calls = []

    def hub(name, config=None, **settings):  # the Hub's files, here a local copy of them
        calls.append((name, config, settings))
        return load_dataset(str(shards["parquet"]), streaming=True)

    monkeypatch.setattr(sources, "load_dataset", hub)
    data_args, _, args = streamed_recipe("org/brain", tmp_path, "--streaming", "true")
    data = load_data(data_args, args)
    assert calls == [("org/brain", None, {"streaming": True})]
    assert data.streamed and data.task.label_names == ["normal", "tumor"]
    assert len(data.validation) == len(load_from_disk(str(brain_binary))["validation"])


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["--max_steps", "-1"], "set max_steps"),
        (["--cv_folds", "2", "--cv_fold", "0"], "cv_folds: 2"),
        (["--max_train_samples", "10"], "max_train_samples: 10"),
        (["--data_cache", "ram"], "data_cache: ram"),
        (["--sampler", "weighted"], "sampler: weighted"),
        (["--class_weighting", "balanced"], "class_weighting: balanced"),
        (["--training_mode", "linear_probe"], "training_mode: linear_probe"),
    ],
)
def test_a_stream_refuses_what_needs_the_whole_split(overrides, key, shards, tmp_path):
    data_args, _, args = streamed_recipe(shards["webdataset"], tmp_path, *overrides)
    with pytest.raises(MedftError) as error:
        load_data(data_args, args)
    assert key in one_line(error)


def test_shard_folders_that_cannot_be_streamed_are_named(shards, tmp_path):
    empty = tmp_path / "empty"
    shutil.copytree(shards["webdataset"], empty, ignore=shutil.ignore_patterns("*.tar"))
    mixed = tmp_path / "mixed"
    shutil.copytree(shards["webdataset"], mixed)
    shutil.copy(next((shards["parquet"] / "train").glob("*.parquet")), mixed / "train")
    bare = tmp_path / "bare"
    shutil.copytree(shards["webdataset"], bare, ignore=shutil.ignore_patterns("*.json"))
    for folder, says in [
        (empty, "holds no *.parquet or *.tar shards"),
        (mixed, "mixes Parquet and WebDataset shards"),
        (bare, "have no dataset_info.json"),
    ]:
        data_args, _, args = streamed_recipe(folder, tmp_path / "model")
        with pytest.raises(MedftError) as error:
            load_data(data_args, args)
        assert says in one_line(error)
    with pytest.raises(MedftError) as error:
        load_training_data(str(shards["webdataset"]))  # what the other commands read
    assert "holds shards to stream" in one_line(error)
    with pytest.raises(MedftError) as error:
        BrainTumorArguments(
            output=tmp_path / "x", source=tmp_path, format="webdataset", push_to_hub="me/x"
        )
    assert "upload the output folder" in one_line(error)
