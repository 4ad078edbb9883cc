"""Weights files on disk: a model folder's checked before transformers reads it, and a
`pretrained_weights` state dict for a timm architecture, for machines without the Hub.

A damaged file (an interrupted save, copy or download; a Git LFS pointer left by a clone
without git-lfs) is one error naming it, whichever route reads it. A `pretrained_weights`
file is read by timm's own checkpoint reader (safetensors, or `torch.load` with
``weights_only=True``, so no pickled code runs; nested ``state_dict`` / ``model`` /
EMA keys and ``module.`` prefixes handled as timm handles them), then filtered as timm
filters its own pretrained weights for the architecture (its checkpoint filter: other
layouts renamed, position embeddings resampled, a masked-image-modelling head left out).
A classifier whose size differs from the new head's is left out, as timm does when it
loads ImageNet weights into a model with another number of classes, and a file with none
(a self-supervised backbone) leaves the new head as it is. Anything else that does not
fit is one error naming how many keys and the first few.
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from timm.models import load_state_dict
from torch import nn

from medft.errors import MedftError, first_line

logger = logging.getLogger("medft")
SHOWN_KEYS = 3
WRAPPER_PREFIX = "timm_model."  # a TimmWrapper (e.g. medft's own model.safetensors)
# what reading a damaged file raises: safetensors' header checks, torch.load's zip reader
# (RuntimeError, OSError) and its unpickler (EOFError, UnpicklingError: a pickled module too)
UNREADABLE = (SafetensorError, RuntimeError, OSError, EOFError, pickle.UnpicklingError)
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a pre-1.6 pickle
LFS_POINTER_START = b"version https://git-lfs"


def start_problem(path: Path) -> str | None:
    """What the first bytes of ``path`` show it is instead of a weights file (None: nothing).

    A torch file must start as torch.save writes one: on other bytes, torch's unpickler
    raises whatever the bytes happen to trigger.
    """
    with path.open("rb") as file:
        start = file.read(len(LFS_POINTER_START))
    if not start:
        return "empty"
    if start == LFS_POINTER_START:
        return "a Git LFS pointer, not the weights (`git lfs pull` fetches them)"
    if path.suffix != ".safetensors" and not start.startswith(TORCH_FILE_STARTS):
        return f"not a safetensors or torch.save file (it starts with {start[:8]!r})"
    return None


def header_problem(path: Path) -> str | None:
    """Why the weights file ``path`` cannot be read, from its first bytes and its header (the
    tensors themselves are not read); None when it can."""
    problem = start_problem(path)
    if problem:
        return problem
    try:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt"):  # checks the header covers the whole file
                return None
        torch.load(path, map_location="meta", weights_only=True)
    except UNREADABLE as error:
        return f"damaged or incomplete ({type(error).__name__}: {first_line(error, 120)})"
    return None


def check_saved_weights(source: str | Path) -> None:
    """Refuse a damaged weights file in the local model folder ``source`` (those transformers
    would read: safetensors, else pytorch_model.bin) before it is loaded; a Hub id is left to
    the Hub's own checks."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    for path in files:
        problem = header_problem(path)
        if problem:
            raise MedftError(
                f"the weights file {path} is {problem}: save the model again (save_pretrained) "
                "or download it again."
            )


def read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise MedftError(f"pretrained_weights {path} does not exist; check the path.")
    try:
        problem = start_problem(path)
        state = None if problem else load_state_dict(str(path), use_ema=True, weights_only=True)
    # AttributeError: timm's reader given a file that holds no mapping (one tensor, a list)
    except (*UNREADABLE, AttributeError) as error:
        problem = f"{type(error).__name__}: {first_line(error)}"
    if problem:
        raise MedftError(
            f"pretrained_weights {path} cannot be read as a state dict ({problem}); save or "
            "download it again if it is damaged or incomplete, and save model.state_dict() "
            "with torch.save or safetensors (a whole pickled model is refused: it could run code)."
        )
    if not isinstance(state, dict) or not state:
        raise MedftError(f"pretrained_weights {path} holds no tensors.")
    return {key.removeprefix(WRAPPER_PREFIX): value for key, value in state.items()}


def listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (", ..." if len(keys) > SHOWN_KEYS else "")


def classifier_prefix(model: nn.Module) -> str:
    classifier = model.get_classifier()
    name = next(name for name, module in model.named_modules() if module is classifier)
    return name + "."


def timm_filtered(state: dict, model: nn.Module) -> dict:
    """``state`` as timm filters its own pretrained weights for the model's architecture (the
    `checkpoint_filter_fn` of its module: other checkpoint layouts renamed, position
    embeddings resampled to the model's grid, a masked-image-modelling head left out, as EVA-X
    checkpoints hold); as it is where the architecture has no filter, or the filter cannot read
    it (then the keys are checked as they are)."""
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if checkpoint_filter is None:
        return state
    try:
        return checkpoint_filter(state, model)
    except (KeyError, ValueError, RuntimeError, AttributeError, IndexError):
        return state


def load_weights_file(model: nn.Module, path: Path) -> None:
    """Fill the timm ``model`` (its classifier excepted, when sized otherwise or not in the
    file, as in a self-supervised backbone's) from ``path``."""
    state = timm_filtered(read_state_dict(path), model)
    expected = model.state_dict()
    head = classifier_prefix(model)
    replaced = [
        key
        for key, value in state.items()
        if key.startswith(head) and key in expected and value.shape != expected[key].shape
    ]
    file_classes = state[replaced[0]].shape[0] if replaced else None
    for key in replaced:
        del state[key]
    missing = [
        key
        for key in expected
        if key not in state
        and key not in replaced
        and not key.startswith(head)
        and not key.endswith("num_batches_tracked")
    ]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in state if key in expected and state[key].shape != expected[key].shape]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(found)} {what} ({listed(found)})"
            for found, what in (
                (missing, "missing from the file"),
                (unexpected, "not in the model"),
                (reshaped, "of another shape"),
            )
            if found
        ]
        raise MedftError(
            f"pretrained_weights {path.name} does not fit timm's "
            f"{model.pretrained_cfg.get('architecture', type(model).__name__)}: "
            f"{len(state)} tensors in the file, {'; '.join(problems)}. Check that the file is a "
            "state dict of this architecture in timm's parameter names."
        )
    model.load_state_dict(state, strict=False)
    if replaced:
        logger.info(
            "pretrained_weights %s: loaded %d tensors; its %d-class classifier (%s) is replaced "
            "by a new %d-label one",
            path.name,
            len(state),
            file_classes,
            head.rstrip("."),
            model.num_classes,
        )
    else:
        logger.info("pretrained_weights %s: loaded %d tensors", path.name, len(state))
