"""`pretrained_weights`: a local state dict for a timm architecture, for machines without the Hub.

The file is read by timm's own checkpoint reader (safetensors, or `torch.load` with
``weights_only=True``, so no pickled code runs; nested ``state_dict`` / ``model`` /
EMA keys and ``module.`` prefixes handled as timm handles them). A classifier whose
size differs from the new head's is left out, as timm does when it loads ImageNet
weights into a model with another number of classes. Anything else that does not
fit is one error naming how many keys and the first few.
"""

from __future__ import annotations

import logging
from pathlib import Path

from timm.models import load_state_dict
from torch import nn

from medft.errors import MedftError, first_line

logger = logging.getLogger("medft")
SHOWN_KEYS = 3
WRAPPER_PREFIX = "timm_model."  # a TimmWrapper (e.g. medft's own model.safetensors)


def read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise MedftError(f"pretrained_weights {path} does not exist; check the path.")
    try:
        state = load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as error:  # safetensors, torch and pickle each raise their own types
        raise MedftError(
            f"pretrained_weights {path} cannot be read as a state dict "
            f"({type(error).__name__}: {first_line(error)}); save model.state_dict() with "
            "torch.save or safetensors (a whole pickled model is refused: it could run code)."
        ) from None
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


def load_weights_file(model: nn.Module, path: Path) -> None:
    """Fill the timm ``model`` (its classifier excepted, when sized otherwise) from ``path``."""
    state = read_state_dict(path)
    expected = model.state_dict()
    head = classifier_prefix(model)
    replaced = [
        key for key, value in state.items()
        if key.startswith(head) and key in expected and value.shape != expected[key].shape
    ]  # fmt: skip
    file_classes = state[replaced[0]].shape[0] if replaced else None
    for key in replaced:
        del state[key]
    missing = [
        key for key in expected
        if key not in state and key not in replaced and not key.endswith("num_batches_tracked")
    ]  # fmt: skip
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
