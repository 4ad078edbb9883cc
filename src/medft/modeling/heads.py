"""Head and regularisation settings that a saved model must still reload with plain `pipeline()`.

- ``head_dropout``: a dropout on the classifier's input, added as a forward
  pre-hook, so the classifier keeps its parameter names and the saved weights
  load unchanged (dropout is inactive at inference anyway).
- ``head_hidden_sizes`` (or the linear probe's ``probe_hidden``): only timm
  architectures that build an MLP head themselves (`head_hidden_size`); the saved
  config then rebuilds it.
- ``drop_path_rate``: the backbone's own stochastic depth setting.
- a temperature (divided into) or a prior shift (added to the bias) folded into the
  classifier's last linear layer, so plain `pipeline()` returns the adjusted scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.modeling.sharded import operand_of, reshard

DROP_PATH_ATTRIBUTES = ("drop_path_rate", "drop_connect_rate")  # the second: EfficientNet


def timm_head_settings(args: ModelArguments) -> dict[str, Any]:
    """`timm.create_model` arguments for the head and stochastic depth."""
    settings: dict[str, Any] = {}
    if args.head_hidden_size:
        settings["head_hidden_size"] = args.head_hidden_size
    if args.drop_path_rate is not None:
        settings["drop_path_rate"] = args.drop_path_rate
    return settings


def set_transformers_drop_path(config: PretrainedConfig, args: ModelArguments) -> None:
    if args.drop_path_rate is None:
        return
    attribute = next((a for a in DROP_PATH_ATTRIBUTES if hasattr(config, a)), None)
    if attribute is None:
        raise MedftError(
            f"drop_path_rate: {config.model_type} models have no stochastic depth; remove the key."
        )
    setattr(config, attribute, args.drop_path_rate)


def add_head_dropout(model: PreTrainedModel, classifier: str, probability: float) -> None:
    """Dropout on the input of the ``classifier`` module while training."""
    if not probability:
        return
    module = model.get_submodule(classifier)

    def drop_input(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (nn.functional.dropout(inputs[0], probability, layer.training), *inputs[1:])

    module.register_forward_pre_hook(drop_input)


def logit_layer(model: PreTrainedModel, classifier: str, what: str) -> nn.Linear:
    """The last linear layer of the ``classifier`` module: the one producing the logits, which
    ``what`` (a temperature, a prior shift) is folded into."""
    module = model.get_submodule(classifier)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise MedftError(
            f"cannot fold {what} into {classifier} ({type(module).__name__}): it has no "
            "linear layer producing the logits."
        )
    return linears[-1]


def fold_temperature(model: PreTrainedModel, classifier: str, temperature) -> None:
    """Divide the model's logits by ``temperature`` (one value, or one per label) inside the
    model: the weight rows and bias of the classifier's last linear layer are divided, so the
    saved model's plain `pipeline()` returns the calibrated probabilities."""
    last = logit_layer(model, classifier, "a temperature")
    reshard(model)
    scale = torch.as_tensor(temperature, dtype=last.weight.dtype, device=last.weight.device)
    scale = scale.reshape(-1)
    with torch.no_grad():
        last.weight.div_(operand_of(last.weight, scale[:, None] if scale.numel() > 1 else scale))
        if last.bias is not None:
            last.bias.div_(operand_of(last.bias, scale))


def fold_prior_shift(model: PreTrainedModel, classifier: str, shift) -> None:
    """Add ``shift`` (one value per label) to the model's logits inside the model: to the bias
    of the classifier's last linear layer, so plain `pipeline()` returns the shifted scores."""
    last = logit_layer(model, classifier, "a prior shift")
    if last.bias is None:
        raise MedftError(
            f"cannot fold a prior shift into {classifier}: its last linear layer has no bias."
        )
    with torch.no_grad():
        last.bias.add_(torch.as_tensor(shift, dtype=last.bias.dtype, device=last.bias.device))
