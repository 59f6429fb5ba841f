"""Invariants the driver proves every round and records in metrics.json.

The two bugs most often reported against lottery-ticket code are rewinding that silently did not happen and
masks that leaked (pruned weights drifting back to non-zero). Each round therefore checks, bit for bit:
at the start, every surviving weight equals its planned start value (the rewind point, for a ticket) and
every pruned weight is zero; at the
end, every pruned weight is still zero and each group's surviving count equals the planned one, and a structured
run proves its structure (whole units pruned, at most N of every M).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lth import structures
from lth.errors import RunFailed
from lth.models import prunable_weights
from lth.prune import Masks, PruneGroup
from lth.schema import PruneConfig


def check_start(model: nn.Module, masks: Masks, start: dict[str, Tensor]) -> dict[str, bool]:
    """`start` is what the round is meant to start from: the rewind point (the ticket), the previous round's
    final weights (fine-tuning) or a fresh initialisation (the re-initialisation control)."""
    state = model.state_dict()
    weights = prunable_weights(model)
    reset = all(
        torch.equal(value, torch.where(masks[name], start[name], 0) if name in masks else start[name])
        for name, value in state.items()
    )
    return {"start_survivors_reset_as_planned": reset, "start_pruned_are_zero": _pruned_are_zero(weights, masks)}


def check_end(
    model: nn.Module, masks: Masks, groups: list[PruneGroup], prune: PruneConfig | None = None, round_index: int = 0
) -> dict[str, bool]:
    """Pruned weights still zero, each group at its planned count of the structure's units, and the structure's
    own proofs (`lth.structures.check`; `prune` unset: single weights)."""
    proofs = structures.check(model, masks, groups, prune or PruneConfig(), round_index)
    return {"end_pruned_are_zero": _pruned_are_zero(prunable_weights(model), masks), **proofs}


def require(checks: dict[str, bool], round_index: int) -> None:
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise RunFailed(f"round {round_index}: invariant check failed: {', '.join(failed)}")


def _pruned_are_zero(weights: dict[str, Tensor], masks: Masks) -> bool:
    return all(not bool(weight[~masks[name]].any()) for name, weight in weights.items())
