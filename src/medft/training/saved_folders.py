"""What MedftTrainer writes into a model or checkpoint folder beside the Trainer's own files:
the training arguments as redacted JSON instead of a pickle, and a checkpoint's weights
under the names they have in memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedModel, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME

from medft.public_names import path_within

ARGUMENTS_NAME = "training_args.json"
# TrainingArguments that may hold a local path (output_dir itself is written as its name)
PATH_ARGUMENTS = (
    "output_dir",
    "resume_from_checkpoint",
    "deepspeed",
    "fsdp_config",
    "accelerator_config",
    "feature_cache_dir",
)


def write_training_arguments(args: TrainingArguments, folder: Path) -> Path:
    """``args`` as JSON (`to_dict` redacts every ``*_token``), replacing the pickle; paths
    relative to output_dir, else by name (the file is pushed, and paths may name patients)."""
    (folder / TRAINING_ARGS_NAME).unlink(missing_ok=True)
    content = args.to_dict()
    for key in PATH_ARGUMENTS:
        if isinstance(content.get(key), str):
            content[key] = path_within(content[key], args.output_dir)
    path = folder / ARGUMENTS_NAME
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


@contextmanager
def in_memory_names(model: torch.nn.Module) -> Iterator[None]:
    """While in the block, `model.save_pretrained` writes its parameters under the names the
    model has in memory, not the original checkpoint format's.

    transformers 5 renames some architectures' parameters when it loads them (ViT, DINOv2,
    Swin: `vit.encoder.layer.0...` in the files, `vit.layers.0...` in memory) and renames them
    back when it saves, while the Trainer reloads a checkpoint (the best one at the end, or
    one to resume from) with a non-strict `load_state_dict`, which keeps none of the renamed
    tensors and says so only in a log line (transformers issue 43701). Checkpoints written
    with the in-memory names load whole; `from_pretrained` reads them too."""
    if not isinstance(model, PreTrainedModel):
        yield
        return
    model.save_pretrained = partial(type(model).save_pretrained, model, save_original_format=False)
    try:
        yield
    finally:
        del model.save_pretrained
