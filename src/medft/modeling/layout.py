"""A backbone's parameters in order from input to output: stem, blocks, neck, head.

Freezing, gradual unfreezing and layer-wise learning-rate decay all count in
"blocks": a ViT's encoder layers, a ResNet's or ConvNeXt's stages, an
EfficientNet's stages (timm) or blocks (transformers). Each family lays its models
out (`BackboneFamily.block_layout`): timm's own parameter groups, or the largest
layer list of a transformers model.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
