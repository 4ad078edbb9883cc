"""FSDP, DeepSpeed and multi-node with real processes: two CPU processes over gloo, each
launched by `accelerate launch` from the shipped configs (a CPU copy: use_cpu, no mixed
precision)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from accelerate import PartialState
from accelerate.utils import FullyShardedDataParallelPlugin
from datasets import load_from_disk
from transformers import AutoModelForImageClassification

from medft.cli import main
from medft.errors import MedftError
from medft.evaluation.external import SplitRecord
from medft.inference.classifier import load_classifier
from medft.inference.reading import ImageReader
from medft.inference.scoring import score_images
from medft.modeling import build_model
from medft.parsing import parse_recipe
from medft.training.sharding import embeddings_holders, shard_by_blocks, shard_units
from tests.helpers import FIXTURES, REPO, THREE, tiny_timm, tiny_vit
from tests.test_training import check_pipeline_serves

FSDP_ON_CPU = Path(__file__).parent / "fsdp_on_cpu.py"
FINETUNE = REPO / "src" / "finetune.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cpu_copy(name: str, folder: Path) -> Path:
    """The shipped accelerate config ``name`` on the CPU: use_cpu, no mixed precision."""
    config = yaml.safe_load((REPO / "accelerate_configs" / name).read_text())
    config |= {"use_cpu": True, "mixed_precision": "no"}
    path = folder / f"cpu_{name}"
    path.write_text(yaml.safe_dump(config))
    return path


def launch_command(config: Path, script: Path, recipe: str, dataset: Path, output: Path,
                   *extra: str, launch: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            *launch, str(script), str(FIXTURES / recipe), "--dataset_name", str(dataset),
            "--output_dir", str(output), *extra]  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=ENV)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def check_scores_reproduce(output: Path, dataset: Path) -> None:
    """The saved model scores the test split as the sharded model did during the run."""
    record = SplitRecord.read(output)
    classifier = load_classifier(output, device="cpu")
    reader = ImageReader(classifier, splits=[load_from_disk(str(dataset))["test"]])
    probs, _ = score_images(classifier, reader, batch_size=64, num_workers=0, progress=False)
    np.testing.assert_allclose(probs, record.probs, atol=2e-4)


def check_whole_model(output: Path) -> None:
    """model.safetensors holds every weight of the model (no shard, nothing missing)."""
    _, info = AutoModelForImageClassification.from_pretrained(output, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def sharded_checkpoint(output: Path) -> Path:
    """The one checkpoint, checked to hold the model in shards, one per process."""
    (checkpoint,) = output.glob("checkpoint-*")
    shards = sorted(path.name for path in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    assert not (checkpoint / "model.safetensors").exists()
    return checkpoint


def test_fsdp_shards_a_vit_and_saves_the_whole_model(brain_binary, tmp_path):
    output = tmp_path / "model"
    config = cpu_copy("fsdp.yaml", tmp_path)
    result = run(launch_command(config, FSDP_ON_CPU, "tiny_vit.yaml", brain_binary, output))
    assert "FSDP: one unit per ViTLayer" in result.stdout
    sharded_checkpoint(output)
    check_whole_model(output)
    check_scores_reproduce(output, brain_binary)
    check_pipeline_serves(output, brain_binary)


def test_fsdp_shards_a_timm_cnn_by_its_residual_blocks(nih_prepared, tmp_path):
    """A multi-label ResNet, its temperature per finding folded into the sharded classifier."""
    output = tmp_path / "model"
    config = cpu_copy("fsdp.yaml", tmp_path)
    command = launch_command(config, FSDP_ON_CPU, "tiny_timm.yaml", nih_prepared, output,
                             "--calibration", "temperature_per_finding")  # fmt: skip
    result = run(command)
    assert "FSDP: one unit per BasicBlock" in result.stdout
    assert "Calibration: temperature" in result.stdout
    sharded_checkpoint(output)
    check_scores_reproduce(output, nih_prepared)
    check_pipeline_serves(output, nih_prepared)


def test_fsdp_with_lora_merges_the_adapters_into_the_saved_model(brain_binary, tmp_path):
    output = tmp_path / "model"
    config = cpu_copy("fsdp.yaml", tmp_path)
    extra = ("--lora_r", "4")
    run(launch_command(config, FSDP_ON_CPU, "tiny_vit.yaml", brain_binary, output, *extra))
    assert not (output / "adapter_config.json").exists()
    check_whole_model(output)
    check_scores_reproduce(output, brain_binary)


def test_fsdp_with_one_process(brain_binary, tmp_path):
    """The case that stopped in torch's fully_shard ('Invariant encountered') on a GPU."""
    output = tmp_path / "model"
    config = cpu_copy("fsdp.yaml", tmp_path)
    command = launch_command(config, FSDP_ON_CPU, "tiny_vit.yaml", brain_binary, output,
                             launch=("--num_processes", "1"))  # fmt: skip
    run(command)
    check_whole_model(output)
    check_pipeline_serves(output, brain_binary)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_shipped_fsdp_config_on_the_gpus(brain_binary, tmp_path):
    """accelerate_configs/fsdp.yaml as shipped (bf16, NCCL), one process per GPU; one GPU
    is the case that stopped in fully_shard on an H200."""
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    output = tmp_path / "model"
    config = REPO / "accelerate_configs" / "fsdp.yaml"
    processes = str(torch.cuda.device_count())
    command = launch_command(config, FINETUNE, "tiny_vit.yaml", brain_binary, output,
                             launch=("--num_processes", processes))  # fmt: skip
    result = run(command)
    assert "FSDP: one unit per ViTLayer" in result.stdout
    check_whole_model(output)
    check_pipeline_serves(output, brain_binary)


def test_cross_validation_under_fsdp_saves_each_fold_whole_and_reports_once(brain_binary, tmp_path):
    output = tmp_path / "cv"
    config = cpu_copy("fsdp.yaml", tmp_path)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               str(FSDP_ON_CPU), "cv", str(FIXTURES / "tiny_vit.yaml"), "--folds", "2",
               "--dataset_name", str(brain_binary), "--output_dir", str(output)]  # fmt: skip
    result = run(command)
    assert result.stdout.count("Cross-validation: 2 folds") == 1
    summary = json.loads((output / "cv_summary.json").read_text())
    assert [fold["fold"] for fold in summary["per_fold"]] == [0, 1]
    for fold in range(2):
        check_whole_model(output / f"fold-{fold}")
        check_scores_reproduce(output / f"fold-{fold}", brain_binary)
    assert (output / "ensemble" / "metrics.json").is_file()


def test_a_killed_fsdp_run_resumes_from_its_sharded_checkpoint(brain_binary, tmp_path):
    output = tmp_path / "model"
    config = cpu_copy("fsdp.yaml", tmp_path)
    command = launch_command(config, FSDP_ON_CPU, "tiny_vit.yaml", brain_binary, output,
                             "--num_train_epochs", "4")  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=ENV, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while not list(output.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert first.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint's files land
    os.killpg(first.pid, signal.SIGKILL)  # the launcher and both processes
    first.wait()
    killed_at = sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))
    assert not (output / "test_results.json").exists()

    second = run(command)
    assert f"Resuming from {output / 'checkpoint-'}" in second.stdout
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["epoch"] == 4 and state["global_step"] > killed_at[0]
    check_whole_model(output)
    check_scores_reproduce(output, brain_binary)


def test_shard_units_are_the_blocks_of_either_family():
    vit = build_model(tiny_vit(), THREE)
    assert shard_units(vit.model, vit.layout) == ["ViTLayer"]
    resnet = build_model(tiny_timm(), THREE)
    assert shard_units(resnet.model, resnet.layout) == ["BasicBlock"]
    efficientnet = build_model(tiny_timm("timm/efficientnet_b0"), THREE)
    units = shard_units(efficientnet.model, efficientnet.layout)
    assert units == ["DepthwiseSeparableConv", "InvertedResidual"]  # not the whole backbone


def test_shard_classes_that_hold_the_embeddings_are_refused_in_one_line():
    vit = build_model(tiny_vit(), THREE)
    assert embeddings_holders(vit.model, ["ViTEmbeddings", "ViTLayer"]) == ["ViTEmbeddings"]
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["ViTEmbeddings", "ViTLayer"],
    )
    state = SimpleNamespace(fsdp_plugin=plugin)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(state=state))
    with pytest.raises(MedftError, match="ViTEmbeddings holds the model's input") as error:
        shard_by_blocks(trainer, vit.model, vit.layout)
    assert "\n" not in str(error.value) and "(ViTLayer)" in str(error.value)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--ema_decay", "0.99"], "ema_decay under FSDP"),
        (["--channels_last", "true"], "channels_last under FSDP"),
    ],
)
def test_what_cannot_run_under_fsdp_is_refused_in_one_line(setting, message, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    overrides = ["--dataset_name", "data", "--output_dir", "out", *setting]
    with pytest.raises(MedftError, match=message) as error:
        parse_recipe(FIXTURES / "tiny_timm.yaml", overrides)
    assert "\n" not in str(error.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FAKE_SLURM = {  # what examples/slurm/train.sbatch calls, for two machines on this box
    "scontrol": "#!/bin/sh\necho 127.0.0.1\n",  # the job's first host
    "srun": "#!/bin/sh\nshift\n"  # one task per machine, each with its own log
    'for node in 0 1; do SLURM_NODEID=$node "$@" > "$LOGS/machine$node.log" 2>&1 &\n'
    'pids="$pids $!"; done\nfor pid in $pids; do wait $pid || exit 1; done\n',
}


def test_two_machines_train_once_save_once_and_evaluate_once(brain_binary, tmp_path):
    """examples/slurm/train.sbatch runs two "machines" (one process each) on this box: one
    run, its model, card and evaluation written once, by the main process."""
    output, bin_folder = tmp_path / "model", tmp_path / "bin"
    bin_folder.mkdir()
    for name, script in FAKE_SLURM.items():
        (bin_folder / name).write_text(script)
        (bin_folder / name).chmod(0o755)
    env = ENV | {
        "PATH": f"{bin_folder}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "LOGS": str(tmp_path), "MAIN_PORT": str(free_port()),
        "ACCELERATE_CONFIG": str(cpu_copy("multi_node.yaml", tmp_path)),
        "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_NODELIST": "node[1-2]",
    }  # fmt: skip
    command = ["bash", "examples/slurm/train.sbatch", str(FIXTURES / "tiny_vit.yaml"),
               "--dataset_name", str(brain_binary), "--output_dir", str(output)]  # fmt: skip
    job = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    main, other = ((tmp_path / f"machine{node}.log").read_text() for node in (0, 1))
    assert job.returncode == 0, main[-3000:] + other[-3000:]
    assert main.count("Evaluation:") == 1 and main.count("Model saved to") == 1
    assert "Task: binary" in other  # machine 1 logs too (log_on_each_node) ...
    assert "Evaluation:" not in other and "Model saved to" not in other  # ... but writes none
    state = json.loads((output / "trainer_state.json").read_text())
    assert [entry["epoch"] for entry in state["log_history"] if "eval_loss" in entry] == [1]
    test_images = len(load_from_disk(str(brain_binary))["test"])
    assert json.loads((output / "metrics.json").read_text())["images"] == test_images
    assert not list(output.rglob("*.partial")) and not list(output.rglob(".*"))
    (checkpoint,) = output.glob("checkpoint-*")
    assert sorted(path.name for path in checkpoint.glob("rng_state_*")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]  # one per process: the processes of both machines took part
    check_pipeline_serves(output, brain_binary)


def test_deepspeed_zero2_trains_two_processes_and_saves_the_whole_model(brain_binary, tmp_path):
    """accelerate_configs/deepspeed_zero2.yaml on the CPU: the optimizer state partitioned
    between the two processes, the saved model whole. Needs `pip install medft[deepspeed]`."""
    pytest.importorskip("deepspeed")
    output = tmp_path / "model"
    config = cpu_copy("deepspeed_zero2.yaml", tmp_path)
    run(launch_command(config, FINETUNE, "tiny_vit.yaml", brain_binary, output))
    (checkpoint,) = output.glob("checkpoint-*")
    partitions = sorted(path.name for path in checkpoint.glob("global_step*/*optim_states.pt"))
    assert partitions == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    check_whole_model(output)
    check_scores_reproduce(output, brain_binary)


def test_channels_last_is_off_by_default_under_fsdp(monkeypatch):
    overrides = ["--dataset_name", "data", "--output_dir", "out"]
    assert parse_recipe(FIXTURES / "tiny_timm.yaml", overrides).training.channels_last is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert parse_recipe(FIXTURES / "tiny_timm.yaml", overrides).training.channels_last is False


@pytest.mark.parametrize(
    ("command", "code"),
    [(["synthesize", "brain-tumor-44c", "{tmp}/fake", "--per_class", "1"], 0),
     (["audit", "{tmp}/no_such_dataset"], 2)],
)  # fmt: skip
def test_a_launched_command_leaves_its_process_group_before_it_exits(command, code, tmp_path):
    """Left to the interpreter's exit, gloo's threads abort a process now and then (SIGABRT
    after a finished run, seen in CI); medft leaves the group itself, after a failure too."""
    store = f"file://{tmp_path / 'store'}"
    torch.distributed.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        assert main([part.format(tmp=tmp_path) for part in command]) == code
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        PartialState._reset_state()
