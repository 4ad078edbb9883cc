"""Small models and recipes shared by the modeling and technique tests."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, set_seed

from medft.config import EvaluationOptions, ModelArguments
from medft.evaluation.evaluate import EvaluationReport, SplitScores, evaluate_scores
from medft.modeling import BuiltModel, build_model
from medft.parsing import parse_recipe
from medft.tasks import TaskInfo
from medft.training import train

REPO = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
THREE = TaskInfo(["benign", "malignant", "normal"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")
TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 8,
}


NORMAL_TUMOR = ClassLabel(names=["normal", "tumor"])


def grey_scans(sizes: list[tuple[int, int]], label=NORMAL_TUMOR) -> Dataset:
    """A split of one grey image per (width, height), in shades by row, labels alternating."""
    features = Features({"image": ImageFeature(), "label": label})
    images = [Image.new("L", size, 40 + 20 * (row % 10)) for row, size in enumerate(sizes)]
    labels = [row % 2 for row in range(len(sizes))]
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def saved_splits(splits: dict[str, Dataset], folder: Path) -> str:
    """``splits`` saved as `medft prepare` leaves them (dataset_dict.json); the folder's name."""
    DatasetDict(splits).save_to_disk(str(folder))
    return str(folder)


def tiny_vit(**settings) -> ModelArguments:
    return ModelArguments(
        "vit", pretrained=False, config_overrides=TINY_VIT, image_size=32, **settings
    )


def tiny_timm(name: str = "timm/resnet18", **settings) -> ModelArguments:
    return ModelArguments(name, pretrained=False, image_size=32, **settings)


def save_tiny_model(folder: Path, family: str = "vit", task: TaskInfo = THREE) -> Path:
    """A tiny ViT (or timm ResNet-18) with ``task``'s labels, saved as `medft train` saves one."""
    built = build_model(tiny_vit() if family == "vit" else tiny_timm(), task)
    built.model.save_pretrained(folder)
    if family == "vit":  # a TimmWrapper's preprocessing travels in its config.json
        built.processor.save_pretrained(folder)
    return folder


def as_pytorch_bin(folder: Path) -> Path:
    """The folder's model.safetensors rewritten as the pytorch_model.bin of older releases."""
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    return folder / "pytorch_model.bin"


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:0f1e\nsize 1024\n"
DAMAGES = {  # what an interrupted save, copy or download, or a clone without git-lfs, leaves
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "git_lfs_pointer": lambda data: LFS_POINTER,
}


def damage(path: Path, how: str) -> Path:
    path.write_bytes(DAMAGES[how](path.read_bytes()))
    return path


def lora_vit_with_adapters() -> BuiltModel:
    """A tiny ViT with LoRA adapters that change its output (peft starts lora_B at zero, so
    merging untouched adapters would be a no-op), seeded."""
    set_seed(0)
    built = build_model(tiny_vit(lora_r=4), THREE)
    with torch.no_grad():
        for name, parameter in built.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return built


def run_recipe(recipe: str, dataset: Path, output: Path, *overrides: str) -> dict[str, float]:
    """Train a fixture recipe on ``dataset`` into ``output``; the Trainer's test metrics."""
    arguments = parse_recipe(
        FIXTURES / recipe,
        ["--dataset_name", str(dataset), "--output_dir", str(output), *overrides],
    )
    return train(*arguments).test_metrics


def initial_and_trained(recipe: str, dataset: Path, output: Path, *overrides: str):
    """The model's weights as `train()` starts them (same seed) and as it saved them."""
    data_args, model_args, args = parse_recipe(
        FIXTURES / recipe,
        ["--dataset_name", str(dataset), "--output_dir", str(output), *overrides],
    )
    train(data_args, model_args, args)
    set_seed(args.seed)
    from medft.data.loading import load_training_data

    _, task = load_training_data(str(dataset))
    initial = {k: v.clone() for k, v in build_model(model_args, task).model.state_dict().items()}
    trained = AutoModelForImageClassification.from_pretrained(output).state_dict()
    return initial, trained  # both with module names (files may keep legacy checkpoint names)


def binary_report() -> EvaluationReport:
    """The evaluation of six hand-made binary scores (AUROC 7/9), as a model card shows it."""
    positive = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.9])
    scores = SplitScores(np.stack([1 - positive, positive], 1), np.array([0, 0, 0, 1, 1, 1]))
    report = evaluate_scores(
        TaskInfo(["normal", "tumor"], multi_label=False),
        scores,
        split="test",
        tuning=scores,
        tuning_split="validation",
        options=EvaluationOptions(bootstrap_resamples=50),
    )
    report.files = ["roc_curves.png", "reliability_diagram.png"]
    return report


def on_two_cpu_processes(*arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`accelerate launch` of ``arguments`` (a script, or ``-m`` and a module, then its
    arguments) as two CPU processes over gloo, from the shipped multi_cpu.yaml, one thread
    each; checked to succeed."""
    config = REPO / "accelerate_configs" / "multi_cpu.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
