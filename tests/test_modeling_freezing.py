import pytest
import torch
from transformers import TrainerControl, TrainerState

from medft.modeling import build_model
from medft.modeling.freezing import (
    FrozenNorms,
    GradualUnfreezing,
    frozen_norms,
    parameter_table,
    trainable_groups,
)
from tests.helpers import THREE, initial_and_trained, tiny_timm, tiny_vit


def trainable(built) -> set[str]:
    return {built.layout.names[n] for n, p in built.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("args", [tiny_vit, tiny_timm], ids=["vit", "timm"])
def test_freeze_modes(args):
    assert trainable(build_model(args(freeze="backbone"), THREE)) == {"head"}
    partial = build_model(args(freeze="partial", unfreeze_last_n=1), THREE)
    last_block = partial.layout.blocks[-1][0]
    assert trainable(partial) >= {"head", last_block}
    assert partial.layout.blocks[0][0] not in trainable(partial)
    everything = build_model(args(), THREE)
    assert trainable(everything) == {name for name, _ in everything.layout.groups()}


def test_parameter_table_counts_trainable_and_frozen():
    built = build_model(tiny_timm(freeze="partial", unfreeze_last_n=1), THREE)
    table = parameter_table(built.model, built.layout)
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    fc = built.model.timm_model.fc
    assert rows["head"] == [f"{fc.weight.numel() + fc.bias.numel():,}", "0"]
    assert rows["layer1"][0] == "0" and rows["layer4"][1] == "0"
    total = sum(p.numel() for p in built.model.parameters())
    assert sum(int(v.replace(",", "")) for v in rows["total"]) == total


def test_frozen_batch_norms_stay_in_eval_mode():
    built = build_model(tiny_timm(freeze="backbone"), THREE)
    kept = FrozenNorms()
    kept.on_train_begin(None, TrainerState(), TrainerControl(), model=built.model)
    built.model.train()  # as the Trainer does every step
    kept.keep_in_eval()
    norms = frozen_norms(built.model)
    assert norms and all(not norm.training for norm in norms)
    assert built.model.timm_model.fc.training


def test_gradual_unfreezing_adds_one_block_every_k_epochs():
    args = tiny_timm(freeze="backbone", gradual_unfreeze_epochs=2)
    built = build_model(args, THREE)
    callback = GradualUnfreezing(built.layout, args)
    seen = []
    for epoch in range(12):
        callback.on_epoch_begin(
            None, TrainerState(epoch=epoch), TrainerControl(), model=built.model
        )
        seen.append(len(trainable(built) - {"head", "neck"}))
    assert seen == [0, 0, 1, 1, 2, 2, 3, 3, 5, 5, 5, 5]  # the 4 stages, then the stem with them


def test_trainable_groups_of_partial_freezing():
    layout = build_model(tiny_vit(), THREE).layout
    assert trainable_groups(layout, 1) == {"head", "neck", "layers.1"}


@pytest.mark.parametrize(
    "recipe,frozen_prefixes,moved_prefixes",
    [
        (
            "tiny_timm.yaml",
            ["timm_model.conv1", "timm_model.layer1", "timm_model.layer3"],
            ["timm_model.layer4", "timm_model.fc"],
        ),
        ("tiny_vit.yaml", ["vit.embeddings", "vit.layers.0"], ["vit.layers.1", "classifier"]),
    ],
    ids=["timm", "vit"],
)
def test_frozen_weights_are_bit_identical_after_training(
    brain_binary, tmp_path, recipe, frozen_prefixes, moved_prefixes
):
    initial, trained = initial_and_trained(
        recipe, brain_binary, tmp_path / "model", "--freeze", "partial", "--unfreeze_last_n", "1"
    )
    for name, value in trained.items():
        if name.startswith(tuple(frozen_prefixes)):
            assert torch.equal(value, initial[name]), f"{name} moved though frozen"
    for prefix in moved_prefixes:
        weights = [n for n in trained if n.startswith(prefix) and n.endswith("weight")]
        assert any(not torch.equal(trained[n], initial[n]) for n in weights), (
            f"{prefix} did not train"
        )
