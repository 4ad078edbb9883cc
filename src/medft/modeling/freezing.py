"""Which parameters train: frozen backbones, the top n blocks, gradual unfreezing.

A frozen block is frozen completely: its parameters get no gradient (so they
stay bit-identical), and its batch-norm layers keep their running statistics
(`FrozenNorms` puts them back in eval mode at every step), as Keras does for a
layer with ``trainable = False``.
"""

from __future__ import annotations

import logging

from torch import nn
from transformers import PreTrainedModel, TrainerCallback

from medft.config import ModelArguments
from medft.modeling.layout import BlockLayout

logger = logging.getLogger("medft")


def trainable_groups(layout: BlockLayout, unfreeze_last_n: int) -> set[str]:
    """Names of the layout groups that train in a frozen backbone: the head, and with
    ``unfreeze_last_n`` > 0 the neck and that many blocks from the top."""
    if not unfreeze_last_n:
        return {"head"}
    top = [name for name, _ in layout.blocks[len(layout.blocks) - unfreeze_last_n :]]
    return {"head", "neck", *top}


def set_trainable(model: PreTrainedModel, layout: BlockLayout, groups: set[str]) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = layout.names.get(name) in groups


def apply_freezing(model: PreTrainedModel, layout: BlockLayout, args: ModelArguments) -> None:
    if args.freeze != "none":
        set_trainable(model, layout, trainable_groups(layout, args.unfreeze_last_n))


def parameter_table(model: PreTrainedModel, layout: BlockLayout) -> str:
    """Trainable and frozen parameters per group, input to output, with totals."""
    parameters = dict(model.named_parameters())
    rows = []
    for group, names in layout.groups():
        total = sum(parameters[n].numel() for n in names)
        trainable = sum(parameters[n].numel() for n in names if parameters[n].requires_grad)
        rows.append((group, trainable, total - trainable))
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'block':<{width}}  {'trainable':>12}  {'frozen':>12}"]
    lines += [f"{group:<{width}}  {train:>12,}  {frozen:>12,}" for group, train, frozen in rows]
    return "\n".join(lines)


class GradualUnfreezing(TrainerCallback):
    """Every ``every`` epochs, one more block (top down) starts training.

    The optimizer must hold every parameter from the start (see
    `MedftTrainer.create_optimizer`): a frozen parameter has no gradient, so
    the optimizer leaves it alone until it is unfrozen.
    """

    def __init__(self, layout: BlockLayout, args: ModelArguments) -> None:
        self.layout, self.every = layout, args.gradual_unfreeze_epochs
        self.start = args.unfreeze_last_n if args.freeze == "partial" else 0

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        epoch = int(round(state.epoch or 0))
        unfrozen = min(len(self.layout.blocks), self.start + epoch // self.every)
        groups = trainable_groups(self.layout, unfrozen)
        if unfrozen == len(self.layout.blocks):
            groups |= {"stem"}
        before = sum(p.requires_grad for p in model.parameters())
        set_trainable(model, self.layout, groups)
        if sum(p.requires_grad for p in model.parameters()) != before:
            logger.info(
                "Epoch %d: %d of %d blocks now train", epoch, unfrozen, len(self.layout.blocks)
            )


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    """Batch-norm layers whose parameters are all frozen."""
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.affine
        and not any(p.requires_grad for p in module.parameters())
    ]


class FrozenNorms(TrainerCallback):
    """The batch norms of frozen blocks, found when freezing can change (training's start,
    each epoch's start after `GradualUnfreezing`) rather than by walking the model every
    step. The Trainer calls ``model.train()`` every step; `keep_in_eval` then puts them back
    in eval mode, so they normalise with their stored statistics and do not update them."""

    def __init__(self) -> None:
        self.norms: list[nn.Module] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.norms = frozen_norms(model)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self.norms = frozen_norms(model)

    def keep_in_eval(self) -> None:
        for norm in self.norms:
            norm.eval()
