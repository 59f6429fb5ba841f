"""The per-round invariants catch the two classic bugs: a rewind that did not happen, a mask that leaked."""

from __future__ import annotations

import pytest
import torch
from helpers import plan, prune_by_magnitude

from lth.checks import check_end, check_start, require
from lth.config import ModelConfig, PruneConfig
from lth.errors import RunFailed
from lth.models import build, prunable_weights
from lth.prune import apply_masks, dense_masks


@pytest.fixture
def pruned():
    torch.manual_seed(0)
    model = build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10)
    rewind_point = {name: value.clone() for name, value in model.state_dict().items()}
    groups = plan(model, PruneConfig(rate=0.2), dense_masks(model), 1)
    weights = {n: w.detach() for n, w in prunable_weights(model).items()}
    masks = prune_by_magnitude(weights, dense_masks(model), groups)
    apply_masks(model, masks)
    return model, masks, groups, rewind_point


def test_a_correct_round_passes_every_check(pruned):
    model, masks, groups, rewind_point = pruned
    checks = check_start(model, masks, rewind_point) | check_end(model, masks, groups)
    assert all(checks.values()) and len(checks) == 4
    require(checks, 1)


def test_a_survivor_not_rewound_is_caught(pruned):
    model, masks, _, rewind_point = pruned
    with torch.no_grad():
        model.fc2.weight[masks["fc2.weight"]] += 1e-7  # e.g. rewound to the trained weights by mistake
    checks = check_start(model, masks, rewind_point)
    assert checks == {"start_survivors_reset_as_planned": False, "start_pruned_are_zero": True}
    with pytest.raises(RunFailed, match="round 1: invariant check failed: start_survivors_reset_as_planned"):
        require(checks, 1)


def test_a_leaked_mask_and_a_wrong_density_are_caught(pruned):
    model, masks, groups, _ = pruned
    with torch.no_grad():
        model.fc1.weight[~masks["fc1.weight"]] = 0.5  # pruned weights trained back to life
    assert check_end(model, masks, groups)["end_pruned_are_zero"] is False
    next_round = plan(model, PruneConfig(rate=0.2), dense_masks(model), 2)
    assert check_end(model, masks, next_round)["end_density_as_planned"] is False
