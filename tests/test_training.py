import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from huggingface_hub import HfApi
from PIL import Image
from transformers import pipeline

from medft.config.prepare import FolderArguments
from medft.data.loading import load_training_data, shorter_side
from medft.data.pipeline import input_size_advice
from medft.errors import MedftError
from medft.hub import files_to_push
from medft.parsing import parse_recipe
from medft.prepare import prepare_dataset
from tests.helpers import FIXTURES, REPO, on_two_cpu_processes, run_recipe

DATASETS = {
    "binary": "brain_binary",
    "multiclass": "brain_multiclass",
    "multilabel": "nih_prepared",
}


def check_pipeline_serves(output: Path, dataset: Path) -> None:
    """Plain pipeline() loads the folder, knows the labels, and scores with the right function."""
    _, task = load_training_data(str(dataset))
    classifier = pipeline("image-classification", model=str(output))
    scan = Image.new("L", (48, 40), 90)
    scores = {s["label"]: s["score"] for s in classifier(scan, top_k=len(task.label_names))}
    assert set(scores) == set(task.label_names)
    inputs = classifier.image_processor(images=scan.convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        logits = classifier.model(**inputs).logits[0]
    expected = logits.sigmoid() if task.multi_label else logits.softmax(-1)
    for index, name in enumerate(task.label_names):
        assert scores[name] == pytest.approx(expected[index].item(), abs=1e-5)
    if not task.multi_label:
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("recipe", ["tiny_vit.yaml", "tiny_timm.yaml"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_trains_end_to_end_and_pipeline_serves_it(request, tmp_path, recipe, task):
    dataset = request.getfixturevalue(DATASETS[task])
    output = tmp_path / "model"
    test_metrics = run_recipe(recipe, dataset, output)

    expected = {
        "multilabel": "test_mean_auroc",
        "binary": "test_auroc",
        "multiclass": "test_macro_f1",
    }
    assert expected[task] in test_metrics
    for name in (
        "model.safetensors",
        "config.json",
        "README.md",
        "training_curves.png",
        "test_results.json",
        "eval_results.json",
        "all_results.json",
        "metrics.json",
        "roc_curves.png",
        "pr_curves.png",
        "reliability_diagram.png",
    ):
        assert (output / name).is_file(), name
    assert (output / "confusion_matrix.png").is_file() == (task != "multilabel")
    assert (output / "thresholds.json").is_file() == (task != "multiclass")  # for medft predict
    report = json.loads((output / "metrics.json").read_text())
    main_metric = expected[task].removeprefix("test_")
    assert report["split"] == "test" and report["metrics"][main_metric] == pytest.approx(
        test_metrics[expected[task]]
    )  # the Trainer's test metric and the evaluation's agree
    card = (output / "README.md").read_text()
    assert "model-index" in card and "95% CI" in card
    config = json.loads((output / "config.json").read_text())
    assert config["problem_type"] == (
        "multi_label_classification" if task == "multilabel" else "single_label_classification"
    )
    if recipe == "tiny_timm.yaml":
        assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]  # the processor's settings
    check_pipeline_serves(output, dataset)


def test_best_epoch_is_chosen_by_the_task_metric(brain_multiclass, tmp_path):
    output = tmp_path / "model"
    run_recipe("tiny_timm.yaml", brain_multiclass, output, "--num_train_epochs", "2")
    state = json.loads((output / "trainer_state.json").read_text())
    best = output / state["best_model_checkpoint"]  # relative: the folder names no local path
    assert best.parent == output and best.name.startswith("checkpoint-") and best.is_dir()
    logged = [e for e in state["log_history"] if "eval_macro_f1" in e]
    assert state["best_metric"] == max(e["eval_macro_f1"] for e in logged)
    assert any("train_macro_f1" in e for e in state["log_history"])  # the curves' train sample
    assert any("train_aug_macro_f1" in e for e in state["log_history"])  # the epoch's batches
    card = (output / "README.md").read_text()
    assert "Not for clinical use" in card and "## Results on the test split" in card


def test_push_uploads_the_model_card_and_plots_not_checkpoints(brain_binary, tmp_path, monkeypatch):
    calls = {}
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hf.co/{repo_id}"
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.update(kw))
    output = tmp_path / "model"
    run_recipe("tiny_vit.yaml", brain_binary, output, "--push_to_hub", "true",
               "--hub_model_id", "me/brain-vit")  # fmt: skip
    assert calls["repo_id"] == "me/brain-vit"
    uploaded = calls["allow_patterns"]
    assert uploaded == files_to_push(output)
    assert {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "training_curves.png",
        "test_results.json",
    } <= set(uploaded)
    assert not any(name.startswith("checkpoint-") for name in uploaded)
    assert "me/brain-vit" in (output / "README.md").read_text()


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")


def test_no_token_and_no_pickle_is_written_or_pushed(brain_binary, tmp_path, monkeypatch):
    token = "hf_medftTestTokenThatMustNotLeak0123"
    monkeypatch.setenv("HF_TOKEN", token)
    calls = {}
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hf.co/{repo_id}"
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.update(kw))
    output = tmp_path / "model"
    run_recipe("tiny_vit.yaml", brain_binary, output, "--push_to_hub", "true",
               "--hub_model_id", "me/brain-vit")  # fmt: skip
    written = [path for path in output.rglob("*") if path.is_file()]
    assert not [path for path in written if token.encode() in path.read_bytes()]
    assert not list(output.rglob("training_args.bin"))  # in the model folder or a checkpoint
    arguments = json.loads((output / "training_args.json").read_text())
    assert arguments["hub_token"] == "<HUB_TOKEN>" and arguments["learning_rate"] == 1e-3
    assert "training_args.json" in calls["allow_patterns"]
    assert not [name for name in calls["allow_patterns"] if name.endswith(PICKLE_SUFFIXES)]


@pytest.mark.parametrize("how", ["recipe", "command line"])
def test_a_token_in_the_recipe_is_refused(how, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model_name_or_path: vit\ndataset_name: d\noutput_dir: o\n"
        + ("hub_token: hf_secret\n" if how == "recipe" else "")
    )
    overrides = ["--hub_token", "hf_secret"] if how == "command line" else []
    with pytest.raises(MedftError, match="hub_token does not belong.*HF_TOKEN.*hf auth login"):
        parse_recipe(recipe, overrides)


def test_input_size_advice_names_both_sizes_and_the_ways_out(brain_binary):
    train_split = load_training_data(str(brain_binary))[0]["train"]
    stored = shorter_side(train_split, "image")
    assert 40 <= stored <= 48  # the generated scans
    small = input_size_advice(128, (224, 224))
    assert "128 px" in small and "224 px" in small and "upsampled 1.8x" in small
    assert "image_size: 128" in small and "--image-size 224" in small
    large = input_size_advice(1024, (224, 224))
    assert "1024 px" in large and "--image-size 256" in large
    assert input_size_advice(256, (224, 224)) is None and input_size_advice(None, (8, 8)) is None


@pytest.fixture(scope="module")
def six_images(tmp_path_factory) -> Path:
    """Two classes of three scans, prepared: too few for a validation or test split."""
    source = tmp_path_factory.mktemp("six_images")
    for index in range(6):
        (source / "ab"[index % 2]).mkdir(exist_ok=True)
        Image.new("L", (40, 40), 40 * index).save(source / "ab"[index % 2] / f"{index}.png")
    output = source.parent / "six_prepared"
    prepare_dataset(
        FolderArguments(output=output, source=source, near_duplicates="off", num_proc=1)
    )
    return output


@pytest.mark.parametrize(("eval_split", "empty"), [("validation", "validation"), ("train", "test")])
def test_an_empty_split_is_refused_when_the_data_is_loaded(six_images, tmp_path, eval_split, empty):
    command = medft_train("tiny_timm.yaml", six_images, tmp_path / "model",
                          "--eval_split", eval_split)  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in result.stderr
    assert f"split '{empty}' of {six_images} has no images" in message[0]
    assert "--val-size" in message[0] and "--near-duplicates" in message[0]
    assert not (tmp_path / "model").exists()  # refused before output_dir is claimed


def medft_train(recipe: str, dataset: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medft.cli", "train", str(FIXTURES / recipe),
            "--dataset_name", str(dataset), "--output_dir", str(output), *extra]  # fmt: skip


def test_a_killed_run_resumes_from_its_last_checkpoint(brain_binary, tmp_path):
    output = tmp_path / "model"
    command = medft_train("tiny_timm.yaml", brain_binary, output, "--num_train_epochs", "6")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(output.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert first.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint's files land
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))
    assert not (output / "test_results.json").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming from {output / 'checkpoint-'}" in second.stdout
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["epoch"] == 6 and state["global_step"] > killed_at[0]
    assert (output / "test_results.json").is_file()


@pytest.mark.parametrize("data_cache", ["none", "ram", "device"])
def test_two_processes_on_the_cpu_through_accelerate(data_cache, brain_binary, tmp_path):
    output = tmp_path / "model"
    arguments = [str(REPO / "src" / "finetune.py"), str(FIXTURES / "tiny_vit.yaml"),
                 "--dataset_name", str(brain_binary), "--output_dir", str(output),
                 "--data_cache", data_cache]  # fmt: skip
    result = on_two_cpu_processes(*arguments)
    held = f"data_cache {data_cache}: decoding the" in result.stdout
    assert held == (data_cache != "none")  # the main process's log: its own shard
    state = json.loads((output / "trainer_state.json").read_text())
    steps_one_process = -(
        -json.loads((brain_binary / "prepare_report.json").read_text())["counts"]["train"] // 16
    )
    assert state["global_step"] == -(-steps_one_process // 2)  # two processes share each epoch
    report = json.loads((output / "metrics.json").read_text())  # gathered from both processes
    test_results = json.loads((output / "test_results.json").read_text())
    assert report["images"] == len(load_training_data(str(brain_binary))[0]["test"])
    assert report["metrics"]["auroc"] == pytest.approx(test_results["test_auroc"])
    check_pipeline_serves(output, brain_binary)
    if data_cache == "none":  # once: a run cannot go on with another number of processes
        again = subprocess.run([sys.executable, *arguments], capture_output=True, text=True)
        assert again.returncode == 2
        assert "holds another run (differs in: processes (now 1))" in again.stderr
        assert json.loads((output / "trainer_state.json").read_text()) == state


def stripes_dataset(folder: Path, per_class: int = 60) -> Path:
    """Two balanced classes a small model learns in a few epochs: horizontal or vertical
    stripes, of varied sizes, periods and phases, with noise."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", per_class), ("validation", 20), ("test", 20)):
        images, labels = [], []
        for label in (0, 1):
            for _ in range(count):
                height, width = rng.integers(36, 56, size=2)
                y, x = np.mgrid[:height, :width]
                along = (y if label == 0 else x) + rng.integers(0, 8)
                stripes = 128 + 60 * np.sign(np.sin(along * np.pi / rng.integers(3, 6)))
                pixels = (stripes + rng.normal(0, 40, (height, width))).clip(0, 255)
                images.append(Image.fromarray(pixels.astype(np.uint8)))
                labels.append(label)
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=["h", "v"])})
        splits[split] = Dataset.from_dict({"image": images, "label": labels}, features=features)
    DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_the_device_path_trains_as_well_as_the_loader_workers(tmp_path):
    """Same data, seed and epochs: held on the device (RAM here) and augmented there, or
    decoded and augmented by loader workers; the augmentation differs draw by draw only."""
    dataset = stripes_dataset(tmp_path / "stripes")
    accuracy = {
        cache: run_recipe("tiny_timm.yaml", dataset, tmp_path / cache, "--num_train_epochs", "4",
                          "--data_cache", cache, "--rotation_degrees", "10",
                          "--train_metrics_samples", "0", "--bootstrap_resamples", "0",
                          )["test_accuracy"]
        for cache in ("none", "device")
    }  # fmt: skip
    assert min(accuracy.values()) >= 0.85, accuracy  # both learnt it (chance: 0.5) ...
    assert abs(accuracy["none"] - accuracy["device"]) <= 0.1, accuracy  # ... about as well


ACCELERATE_CONFIGS = {  # file: (distributed type, processes, mixed precision, on the CPU)
    "cpu.yaml": (DistributedType.NO, 1, "no", True),
    "multi_cpu.yaml": (DistributedType.MULTI_GPU, 2, "no", True),  # torchrun over gloo
    "single_gpu.yaml": (DistributedType.NO, 1, "no", False),
    "multi_gpu_fp16.yaml": (DistributedType.MULTI_GPU, 2, "fp16", False),
    "fsdp.yaml": (DistributedType.FSDP, 2, "bf16", False),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 2, "bf16", False),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 16, "bf16", False),  # 2 machines x 8 GPUs
}


def test_accelerate_configs_load_as_their_names_say():
    assert sorted(path.name for path in (REPO / "accelerate_configs").glob("*.yaml")) == sorted(
        ACCELERATE_CONFIGS
    )
    for name, expected in ACCELERATE_CONFIGS.items():
        config = load_config_from_file(str(REPO / "accelerate_configs" / name))
        loaded = (
            config.distributed_type,
            config.num_processes,
            config.mixed_precision,
            config.use_cpu,
        )
        assert loaded == expected, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training_on_a_gpu(precision, brain_binary, tmp_path):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    output = tmp_path / "model"
    command = medft_train("tiny_timm.yaml", brain_binary, output, f"--{precision}", "true")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((output / "train_results.json").read_text())["train_samples_per_second"] > 0
    check_pipeline_serves(output, brain_binary)


@pytest.mark.parametrize("recipe", ["tiny_vit.yaml", "tiny_timm.yaml"])
def test_one_compiled_training_step(recipe, brain_binary, tmp_path):
    """torch_compile traces both families (aot_eager: dynamo and autograd, no C++ build)."""
    output = tmp_path / "model"
    metrics = run_recipe(recipe, brain_binary, output, "--torch_compile", "true",
                         "--torch_compile_backend", "aot_eager", "--max_steps", "1",
                         "--train_metrics_samples", "0", "--bootstrap_resamples", "0")  # fmt: skip
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and "test_loss" in metrics
    check_pipeline_serves(output, brain_binary)


def test_channels_last_is_the_default_for_cnns_only():
    from medft.modeling import build_model
    from medft.training.run import uses_channels_last
    from tests.helpers import THREE, tiny_timm, tiny_vit

    assert uses_channels_last(None, build_model(tiny_timm(), THREE).model)
    assert not uses_channels_last(None, build_model(tiny_vit(), THREE).model)
    assert not uses_channels_last(False, build_model(tiny_timm(), THREE).model)


def test_loader_workers_default_to_the_cores_of_this_process(monkeypatch):
    from medft.config.training import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers("auto") == 8  # 15 cores to spare, capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers("auto") == 3  # 4 processes share 16 cores
    assert loader_workers("0") == 0
    with pytest.raises(MedftError, match="a number or auto"):
        loader_workers("many")


def test_the_gpu_checks_cpu_parts_run(tmp_path):
    """benchmarks/gpu_check.sh needs a GPU; its arguments and model-only loop run anywhere."""
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--device", "cpu",
               "--models", "resnet18", "vit_tiny_patch16_224", "--image-size", "32",
               "--batch-size", "4", "--steps", "2", "--per-class", "2", "--model-only"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| resnet18") or line.startswith("| vit_tiny")
    ]
    assert len(rows) == 2 and all(float(row.split("|")[2]) > 0 for row in rows)
    generated = Path(result.stdout.split("generated data: ")[1].split()[0])
    assert (generated / "dataset_dict.json").is_file()
    help_text = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")])
    assert help_text.returncode == 0  # the script parses


def test_the_step_anatomy_accounts_for_every_phase_of_a_run(tmp_path):
    """benchmarks/step_anatomy.py on the CPU: each phase measured, none counted twice."""
    results = tmp_path / "anatomy.json"
    command = [sys.executable, str(REPO / "benchmarks" / "step_anatomy.py"), "--image-size", "32",
               "--batch-size", "32", "--per-class", "5", "--epochs", "2", "--model-steps", "2",
               "--set", "bootstrap_resamples=0", "--json", str(results)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads(results.read_text())["resnet18"]
    phases = run["phases"]
    assert all(seconds >= 0 for seconds in phases.values()), phases  # nothing counted twice
    assert abs(phases["other"]) < 0.05 * run["total"]  # nothing left out
    for phase in (
        "training steps (forward, backward, optimizer)",
        "per-epoch evaluation: validation",
        "checkpoints",
        "after training: scoring (calibration, validation, test)",
    ):
        assert phases[phase] > 0, phase
    assert run["model_alone_step"]["median"] > 0 and 0 <= run["wait_share"] < 1
    assert "bound by" in result.stdout
