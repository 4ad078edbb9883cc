import pytest
import torch

from medft.modeling import build_model
from medft.parsing import parse_recipe
from medft.training.optim import depth_scales, exponential_decay, parameter_groups
from tests.helpers import FIXTURES, THREE, tiny_timm


def learning_rates(schedule, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    return rates


def group_of(groups: list[dict], parameter: torch.nn.Parameter) -> dict:
    return next(g for g in groups if any(p is parameter for p in g["params"]))


def test_exponential_decay_follows_the_formula():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = exponential_decay(optimizer, warmup_steps=4, decay_rate=0.5, decay_steps=10)
    rates = learning_rates(schedule, 40)
    for step in range(4):
        assert rates[step] == pytest.approx(0.1 * step / 4)
    for step in (4, 9, 14, 24, 39):
        assert rates[step] == pytest.approx(0.1 * 0.5 ** ((step - 4) / 10))


def test_staircase_decays_in_steps():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = exponential_decay(optimizer, 0, decay_rate=0.9, decay_steps=5, staircase=True)
    rates = learning_rates(schedule, 12)
    assert rates == pytest.approx([1.0] * 5 + [0.9] * 5 + [0.81] * 2)


def test_exponential_is_accepted_beside_transformers_schedules():
    recipe = FIXTURES / "tiny_vit.yaml"
    _, _, args = parse_recipe(recipe, ["--dataset_name", "d", "--output_dir", "o",
                                       "--lr_scheduler_type", "exponential"])  # fmt: skip
    assert args.exponential_decay and args.lr_scheduler_type == "exponential"
    _, _, args = parse_recipe(recipe, ["--dataset_name", "d", "--output_dir", "o",
                                       "--lr_scheduler_type", "cosine"])  # fmt: skip
    assert not args.exponential_decay


def test_layer_decay_scales_learning_rate_by_depth():
    layout = build_model(tiny_timm(), THREE).layout  # stem, 4 stages, head
    scales = depth_scales(layout, 0.5)
    assert scales["head"] == 1.0
    assert [scales[name] for name, _ in layout.blocks] == [0.5**4, 0.5**3, 0.5**2, 0.5]
    assert scales["stem"] == 0.5**5


def test_parameter_groups_hold_every_parameter_once():
    built = build_model(tiny_timm(freeze="backbone"), THREE)
    groups = parameter_groups(
        built.model.named_parameters(),
        built.layout,
        1e-3,
        0.05,
        decayed={"timm_model.fc.weight"},
        layer_decay=0.5,
    )
    held = [p for group in groups for p in group["params"]]
    assert len(held) == len(list(built.model.parameters())) == len({id(p) for p in held})
    fc_weight = group_of(groups, built.model.timm_model.fc.weight)
    assert fc_weight["lr"] == 1e-3 and fc_weight["weight_decay"] == 0.05
    stem = group_of(groups, built.model.timm_model.conv1.weight)
    assert stem["lr"] == pytest.approx(1e-3 * 0.5**5) and stem["weight_decay"] == 0.0
