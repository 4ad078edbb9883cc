"""A backbone's parameters in order from input to output: stem, blocks, neck, head.

Freezing, gradual unfreezing and layer-wise learning-rate decay all count in
"blocks": a ViT's encoder layers, a ResNet's or ConvNeXt's stages, an
EfficientNet's stages (timm) or blocks (transformers). For timm models the
groups are timm's own (`group_matcher(coarse=True)`, the same grouping timm's
layer decay uses); for transformers models the blocks are the largest
`nn.ModuleList` of the base model, which is the encoder's layer or stage list in
every vision family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from timm.models import group_parameters
from torch import nn
from transformers import PreTrainedModel


@dataclass
class BlockLayout:
    """Parameter names of a model, grouped and ordered from input to output."""

    stem: list[str]
    blocks: list[tuple[str, list[str]]]  # (block name, its parameter names)
    neck: list[str]  # backbone parameters after the last block (final norms)
    head: list[str]  # the classifier
    head_module: str  # the classifier's module name
    names: dict[str, str] = field(init=False)  # parameter -> group name

    def __post_init__(self) -> None:
        self.names = {param: group for group, params in self.groups() for param in params}

    def groups(self) -> list[tuple[str, list[str]]]:
        """Every group in order: stem, the blocks, neck, head (empty groups left out)."""
        ordered = [("stem", self.stem), *self.blocks, ("neck", self.neck), ("head", self.head)]
        return [(name, params) for name, params in ordered if params]


def classifier_name(model: PreTrainedModel) -> str:
    """The module name of the layer producing the logits."""
    if hasattr(model, "timm_model"):
        classifier = model.timm_model.get_classifier()
        inner = next(n for n, module in model.timm_model.named_modules() if module is classifier)
        return f"timm_model.{inner}"
    children = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    linear = [
        n
        for n in children
        if any(isinstance(m, nn.Linear) for m in model.get_submodule(n).modules())
    ]
    return linear[-1]


def timm_layout(model: PreTrainedModel) -> BlockLayout:
    timm_model = model.timm_model
    groups = list(group_parameters(timm_model, timm_model.group_matcher(coarse=True)).values())
    head_module = classifier_name(model)
    prefixed = [[f"timm_model.{name}" for name in names] for names in groups]
    head = [n for n in prefixed[-1] if n.startswith(head_module + ".")]
    neck = [n for n in prefixed[-1] if n not in head]
    blocks = prefixed[1:-1] if head else prefixed[1:]
    if not head:  # the classifier sat in no group of its own
        neck = []
        head = [n for n, _ in model.named_parameters() if n.startswith(head_module + ".")]
    names = [
        module_prefix([n.removeprefix("timm_model.") for n in block]) or f"group {i}"
        for i, block in enumerate(blocks, start=1)
    ]
    return BlockLayout(prefixed[0], list(zip(names, blocks)), neck, head, head_module)


def module_prefix(parameters: list[str]) -> str:
    """The module path the ``parameters`` share (layer1.0.conv1.weight, layer1.1.bn2.bias ->
    layer1); empty when they share none."""
    parts = [name.split(".")[:-1] for name in parameters]
    shared = []
    for pieces in zip(*parts):
        if len(set(pieces)) > 1:
            break
        shared.append(pieces[0])
    return ".".join(shared)


def transformers_layout(model: PreTrainedModel) -> BlockLayout:
    prefix = model.base_model_prefix
    base = getattr(model, prefix)
    lists = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    list_name, blocks = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    block_params = [
        (f"{list_name}.{i}", [f"{prefix}.{list_name}.{i}.{n}" for n, _ in block.named_parameters()])
        for i, block in enumerate(blocks)
    ]
    in_blocks = {name for _, names in block_params for name in names}
    base_params = [f"{prefix}.{n}" for n, _ in base.named_parameters()]
    first = base_params.index(block_params[0][1][0])
    stem = [n for n in base_params[:first] if n not in in_blocks]
    neck = [n for n in base_params[first:] if n not in in_blocks]
    head = [n for n, _ in model.named_parameters() if not n.startswith(prefix + ".")]
    return BlockLayout(stem, block_params, neck, head, classifier_name(model))


def block_layout(model: PreTrainedModel) -> BlockLayout:
    return timm_layout(model) if hasattr(model, "timm_model") else transformers_layout(model)
