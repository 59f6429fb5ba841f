"""Early-bird tickets (You et al. 2020, "Drawing early-bird tickets"), for weight masks.

With `prune.early_ticket=true`, at every evaluation of every round the magnitude mask the next round would take
from the current weights is computed, and its normalised Hamming distance to the one of the previous evaluation
(the fraction of the prunable weights whose mask bit differs) is recorded as `mask_distance` in the evaluation
history. Round 0 stops once the largest distance over the last `prune.early_ticket_window` evaluations is below
`prune.early_ticket_epsilon`: the ticket has been drawn, and IMP goes on from round 0's weights at that step
(`early_ticket_step` in its metrics.json). It never stops before the rewind step, whose weights round 1 needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lth.models import prunable_weights
from lth.prune import Masks, PruneGroup, plan_round, prune_by_score
from lth.schema import PruneConfig
from lth.train import Trainer


@dataclass
class EarlyTicket:
    """Tracks how the next round's mask settles during round r; stops round 0 when it has."""

    cfg: PruneConfig
    masks: Masks  # the round's masks: the survivors the next round prunes
    groups: list[PruneGroup]  # the next round's plan
    round_index: int
    rewind_step: int
    previous: Masks | None = None  # the mask the next round would have taken at the previous evaluation

    def after_evaluation(self, trainer: Trainer) -> None:
        weights = prunable_weights(trainer.model)
        scores = {name: weights[name].detach().abs() for name in self.masks}
        mask = prune_by_score(scores, self.masks, self.groups, self.cfg.min_layer_density)
        if self.previous is not None:
            changed = sum(int((mask[name] ^ self.previous[name]).sum()) for name in mask)
            trainer.history[-1].mask_distance = changed / sum(m.numel() for m in mask.values())
        self.previous = mask
        if self.round_index == 0 and trainer.step > self.rewind_step and self.settled(trainer):
            trainer.end_reason = "early_ticket"

    def settled(self, trainer: Trainer) -> bool:
        distances = [e.mask_distance for e in trainer.history if e.mask_distance is not None]
        window = self.cfg.early_ticket_window
        return len(distances) >= window and max(distances[-window:]) < self.cfg.early_ticket_epsilon

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = state["previous"]


def watch(cfg: PruneConfig, masks: Masks, output: str, round_index: int, rewind_step: int) -> EarlyTicket | None:
    """Round r's early-ticket tracker with `prune.early_ticket`, else None."""
    if not cfg.early_ticket:
        return None
    return EarlyTicket(cfg, masks, plan_round(masks, output, cfg, round_index + 1), round_index, rewind_step)
