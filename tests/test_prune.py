"""Mask arithmetic and magnitude pruning: planned densities, exact zeroes, which weights go."""

from __future__ import annotations

import pytest
import torch
from conftest import prune_by_magnitude

from lth.config import ModelConfig, PruneConfig
from lth.models import build, output_layer, prunable_weights
from lth.prune import (
    PruneGroup,
    apply_masks,
    dense_masks,
    density,
    parameter_density,
    prune_groups,
)


@pytest.fixture
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10)


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: w.detach().clone() for name, w in prunable_weights(model).items()}


def test_layerwise_groups_give_the_output_layer_half_the_rate(lenet):
    groups = prune_groups(lenet, PruneConfig(rate=0.2))
    assert [g.layers for g in groups] == [("fc1.weight",), ("fc2.weight",), ("fc3.weight",)]
    assert [g.rate for g in groups] == [0.2, 0.2, 0.1]
    assert prune_groups(lenet, PruneConfig(rate=0.2, output_rate=0.3))[-1].rate == 0.3


def test_global_scope_ranks_hidden_layers_together(lenet):
    groups = prune_groups(lenet, PruneConfig(rate=0.2, scope="global"))
    assert [g.layers for g in groups] == [("fc1.weight", "fc2.weight"), ("fc3.weight",)]


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.37])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_density_follows_the_formula_over_many_rounds(lenet, rate, scope):
    """After r rounds a group pruned at rate p keeps (1-p)^r of its weights, to within one weight."""
    groups = prune_groups(lenet, PruneConfig(rate=rate, scope=scope))
    masks = dense_masks(lenet)
    sizes = {n: m.numel() for n, m in masks.items()}
    generator = torch.Generator().manual_seed(1)
    for round_index in range(1, 9):
        # new "trained" weights each round, as IMP sees them
        trained = {n: torch.randn(m.shape, generator=generator) * m for n, m in masks.items()}
        new = prune_by_magnitude(trained, masks, groups, round_index)
        assert all(bool((new[n] <= masks[n]).all()) for n in masks), "a pruned weight came back"
        masks = new
        for group in groups:
            kept = sum(int(masks[n].sum()) for n in group.layers)
            total = sum(sizes[n] for n in group.layers)
            assert abs(kept - total * (1 - group.rate) ** round_index) <= 1


def test_magnitude_pruning_removes_exactly_the_smallest_survivors():
    weight = torch.tensor([[0.5, -0.1, 3.0, -2.0, 0.05], [1.0, -0.7, 0.2, 4.0, -0.3]])
    mask = torch.ones_like(weight, dtype=torch.bool)
    mask[1, 3] = False  # already pruned: its large magnitude must not save it
    group = PruneGroup(("w",), rate=0.5)
    new = prune_by_magnitude({"w": weight}, {"w": mask}, [group], round_index=1)["w"]
    assert int(new.sum()) == 5  # round(10 * 0.5)
    expected = torch.tensor([[True, False, True, True, False], [True, True, False, False, False]])
    assert torch.equal(new, expected)


def test_global_pruning_can_prune_layers_unevenly():
    small = {"a": torch.full((10,), 0.01), "b": torch.arange(1.0, 11.0)}
    masks = {n: torch.ones(10, dtype=torch.bool) for n in small}
    new = prune_by_magnitude(small, masks, [PruneGroup(("a", "b"), 0.5)], 1)
    assert int(new["a"].sum()) == 0 and int(new["b"].sum()) == 10


def test_applied_masks_leave_exact_zeroes_and_densities_add_up(lenet):
    groups = prune_groups(lenet, PruneConfig(rate=0.2))
    masks = prune_by_magnitude(weights_of(lenet), dense_masks(lenet), groups, 3)
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
