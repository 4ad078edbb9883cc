"""LoRA with peft: which layers it adapts, and merging it back for `pipeline()`.

The classifier always trains in full (`modules_to_save`). Default targets: the
query and value projections of attention, found by name whatever the family
(``q_proj`` / ``v_proj`` or ``query`` / ``value``, as transformers names them, or a
fused ``qkv``, as timm's ViTs and transformers' Hiera have it), and otherwise the
backbone's ungrouped convolutions and linear layers (grouped convolutions cannot
be merged back, so they are left out).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from torch import nn
from transformers import PreTrainedModel

from medft.config import ModelArguments
from medft.errors import MedftError
from medft.modeling.layout import BlockLayout
from medft.modeling.sharded import reshard
from medft.public_names import model_name

logger = logging.getLogger("medft")
# query and value projections, as transformers 5 names them, as older models name them, and
# timm's fused projection
ATTENTION_TARGETS = (["q_proj", "v_proj"], ["query", "value"], ["qkv"])


def module_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}


def default_targets(model: PreTrainedModel, layout: BlockLayout) -> list[str]:
    """The layers LoRA adapts when ``lora_target_modules`` is not given."""
    present = module_names(model)
    for targets in ATTENTION_TARGETS:
        if set(targets) <= present:
            return targets
    adaptable = [
        name
        for name, module in model.named_modules()
        if not name.startswith(layout.head_module)
        and (
            isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
        )
    ]
    if not adaptable:
        raise MedftError("found no layer LoRA can adapt; name them with lora_target_modules.")
    return adaptable


def add_lora(model: PreTrainedModel, layout: BlockLayout, args: ModelArguments) -> PeftModel:
    targets = args.lora_target_modules or default_targets(model, layout)
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        modules_to_save=[layout.head_module],
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as error:  # peft names the module it could not find or adapt
        raise MedftError(
            f"LoRA: {error} (lora_target_modules: {targets})".replace("\n", " ")
        ) from None
    shown = targets if len(targets) <= 6 else [*targets[:5], f"... {len(targets)} layers"]
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d on %s: %s of %s parameters train",
        args.lora_r,
        shown,
        f"{trainable:,}",
        f"{total:,}",
    )
    return peft_model


def merged(model: PeftModel) -> PreTrainedModel:
    """The base model with the adapter folded into its weights: loads without peft. Under
    FSDP, into the shards (every process merges)."""
    reshard(model)
    return model.merge_and_unload()


def name_the_base_model(folder: Path) -> None:
    """An adapter saved in ``folder`` names a local base model by its name, not its path
    (peft records the path, which may name a patient, and is pushed with the adapter)."""
    path = folder / ADAPTER_CONFIG_NAME
    config = json.loads(path.read_text()) if path.is_file() else {}
    if config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = model_name(config["base_model_name_or_path"])
        path.write_text(json.dumps(config, indent=2, sort_keys=True))
