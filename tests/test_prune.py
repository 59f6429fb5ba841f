"""Mask arithmetic and magnitude pruning: planned densities, exact zeroes, which weights go."""

from __future__ import annotations

import pytest
import torch
from helpers import plan, prune_by_magnitude

from lth.config import ModelConfig, PruneConfig
from lth.models import build, output_layer, prunable_weights
from lth.prune import (
    PruneGroup,
    apply_masks,
    collapsed_layers,
    dense_masks,
    density,
    erk_densities,
    parameter_density,
    prune_by_score,
    remaining_parameters,
)


@pytest.fixture
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10)


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: w.detach().clone() for name, w in prunable_weights(model).items()}


def test_layerwise_groups_give_the_output_layer_half_the_rate(lenet):
    groups = plan(lenet, PruneConfig(rate=0.2), dense_masks(lenet), 1)
    assert [g.layers for g in groups] == [("fc1.weight",), ("fc2.weight",), ("fc3.weight",)]
    assert [g.kept for g in groups] == [round(784 * 300 * 0.8), 300 * 100 * 0.8, 1000 * 0.9]
    assert plan(lenet, PruneConfig(rate=0.2, output_rate=0.3), dense_masks(lenet), 2)[-1].kept == 490


def test_global_scope_ranks_hidden_layers_together(lenet):
    groups = plan(lenet, PruneConfig(rate=0.2, scope="global"), dense_masks(lenet), 1)
    assert [g.layers for g in groups] == [("fc1.weight", "fc2.weight"), ("fc3.weight",)]
    assert [g.kept for g in groups] == [round(265_200 * 0.8), 900]


def rate_of(name: str, cfg: PruneConfig) -> float:
    if name == "fc3.weight":
        return cfg.rate / 2
    return cfg.rate


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.37])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_density_follows_the_formula_over_many_rounds(lenet, rate, scope):
    """After r rounds a group pruned at rate p keeps (1-p)^r of its weights, to within one weight."""
    cfg = PruneConfig(rate=rate, scope=scope)
    masks = dense_masks(lenet)
    sizes = {n: m.numel() for n, m in masks.items()}
    generator = torch.Generator().manual_seed(1)
    for round_index in range(1, 9):
        # new "trained" weights each round, as IMP sees them
        trained = {n: torch.randn(m.shape, generator=generator) * m for n, m in masks.items()}
        groups = plan(lenet, cfg, masks, round_index)
        new = prune_by_magnitude(trained, masks, groups)
        assert all(bool((new[n] <= masks[n]).all()) for n in masks), "a pruned weight came back"
        masks = new
        for group in groups:
            kept = sum(int(masks[n].sum()) for n in group.layers)
            total = sum(sizes[n] for n in group.layers)
            assert kept == group.kept
            assert abs(kept - total * (1 - rate_of(group.layers[0], cfg)) ** round_index) <= 1


def test_magnitude_pruning_removes_exactly_the_smallest_survivors():
    weight = torch.tensor([[0.5, -0.1, 3.0, -2.0, 0.05], [1.0, -0.7, 0.2, 4.0, -0.3]])
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask[1, 3] = False  # already pruned: its large magnitude must not save it
    group = PruneGroup(("w",), kept=5)
    new = prune_by_magnitude({"w": weight}, {"w": mask}, [group])["w"]
    assert int(new.sum()) == 5  # round(10 * 0.5)
    expected = torch.tensor([[True, False, True, True, False], [True, True, False, False, False]])
    assert torch.equal(new, expected)


def test_global_pruning_can_prune_layers_unevenly():
    small = {"a": torch.full((10,), 0.01), "b": torch.arange(1.0, 11.0)}
    masks = {n: torch.ones(10, dtype=torch.bool) for n in small}
    new = prune_by_magnitude(small, masks, [PruneGroup(("a", "b"), kept=10)])
    assert int(new["a"].sum()) == 0 and int(new["b"].sum()) == 10


def test_applied_masks_leave_exact_zeroes_and_densities_add_up(lenet):
    groups = plan(lenet, PruneConfig(rate=0.2), dense_masks(lenet), 3)
    masks = prune_by_magnitude(weights_of(lenet), dense_masks(lenet), groups)
    apply_masks(lenet, masks)
    for name, weight in prunable_weights(lenet).items():
        assert bool((weight[~masks[name]] == 0).all())
        assert bool((weight[masks[name]] != 0).all())
    hidden = 784 * 300 + 300 * 100
    expected = (round(784 * 300 * 0.8**3) + round(300 * 100 * 0.8**3) + round(1000 * 0.9**3)) / (hidden + 1000)
    assert density(masks) == pytest.approx(expected)
    pruned = hidden + 1000 - sum(int(m.sum()) for m in masks.values())
    assert parameter_density(lenet, masks) == pytest.approx((266_610 - pruned) / 266_610)
    assert output_layer(lenet) == "fc3.weight"


def test_global_ranking_keeps_one_weight_per_output_unit_unless_told_not_to():
    scores = {"a": torch.full((3, 4), 0.01), "b": torch.arange(1.0, 13.0).view(3, 4)}
    masks = {n: torch.ones(3, 4, dtype=torch.bool) for n in scores}
    group = [PruneGroup(("a", "b"), kept=6)]
    protected = prune_by_score(scores, masks, group, min_layer_density=None)
    assert protected["a"].sum(1).tolist() == [1, 1, 1] and int(protected["b"].sum()) == 3
    unprotected = prune_by_score(scores, masks, group, min_layer_density=0.0)
    assert collapsed_layers(unprotected) == ["a"] and int(unprotected["b"].sum()) == 6
    floor = prune_by_score(scores, masks, group, min_layer_density=0.25)
    assert int(floor["a"].sum()) == 3 and int(floor["b"].sum()) == 3


def test_global_plan_never_keeps_fewer_weights_than_the_protected_ones(lenet):
    groups = plan(lenet, PruneConfig(rate=0.999, scope="global", output_rate=0.5), dense_masks(lenet), 1)
    assert groups[0].kept == 300 + 100, "one weight per output unit of fc1 and fc2"


def test_erk_densities_follow_the_shape_rule_and_hit_the_target():
    layers = {"conv": torch.ones(64, 3, 3, 3, dtype=torch.bool), "fc": torch.ones(10, 4096, dtype=torch.bool)}
    densities = erk_densities(layers, 0.1)
    kept = sum(densities[n] * m.numel() for n, m in layers.items())
    assert kept == pytest.approx(0.1 * sum(m.numel() for m in layers.values()))
    ratio = (sum((64, 3, 3, 3)) / (64 * 27)) / (sum((10, 4096)) / 40960)
    assert densities["conv"] / densities["fc"] == pytest.approx(ratio)
    # a small layer that would exceed density 1 stays dense and the others make up for it
    skewed = erk_densities(
        {"tiny": torch.ones(4, 4, dtype=torch.bool), "big": torch.ones(1000, 1000, dtype=torch.bool)}, 0.05
    )
    assert skewed["tiny"] == 1.0 and skewed["big"] == pytest.approx((0.05 * 1_000_016 - 16) / 1_000_000)


@pytest.mark.parametrize("distribution", ["uniform", "global", "erk"])
def test_oneshot_reaches_the_target_density_over_all_layers(lenet, distribution):
    cfg = PruneConfig(schedule="oneshot", target_density=0.05, rounds=1, distribution=distribution)
    groups = plan(lenet, cfg, dense_masks(lenet), 1)
    masks = prune_by_magnitude(weights_of(lenet), dense_masks(lenet), groups)
    assert density(masks) == pytest.approx(0.05, abs=2e-5)
    if distribution == "uniform":
        assert all(abs(int(m.sum()) - 0.05 * m.numel()) <= 0.5 for m in masks.values())


def test_oneshot_without_a_target_traces_the_curve_from_the_dense_network(lenet):
    cfg = PruneConfig(schedule="oneshot", rate=0.5)
    assert [g.kept for g in plan(lenet, cfg, dense_masks(lenet), 3)] == [29_400, 3750, 125]


def test_ignored_layers_are_never_pruned_and_conv_layers_take_their_own_rate():
    masks = {"conv.weight": torch.ones(8, 3, 3, 3, dtype=torch.bool), "fc.weight": torch.ones(10, 8, dtype=torch.bool)}
    masks["out.weight"] = torch.ones(10, 10, dtype=torch.bool)
    from lth.prune import plan_round

    groups = plan_round(masks, "out.weight", PruneConfig(rate=0.5, conv_rate=0.25, output_rate=0.2), 1)
    assert {g.layers[0]: g.kept for g in groups} == {"conv.weight": 162, "fc.weight": 40, "out.weight": 80}
    ignoring = plan_round(masks, "out.weight", PruneConfig(ignore=["conv.*", "out.weight"]), 1)
    assert [g.layers for g in ignoring] == [("fc.weight",)]


def test_remaining_parameters_count_biases_and_survivors(lenet):
    masks = dense_masks(lenet)
    masks["fc1.weight"][:10] = False
    assert remaining_parameters(lenet, masks) == 266_610 - 7840
