"""Sparse training from the start: static sparse training, SET (Mocanu et al. 2018) and RigL (Evci et al. 2020).

Each is one sparse round (`lth.prune.sparse_from_start` plans its per-layer counts) whose mask is drawn at random
with exactly those counts (`initial_masks`). `static` keeps that mask for the whole round. `set` and `rigl` update it
after every `prune.update_every` steps until `prune.update_until` of the round has trained: in each layer they drop
the fraction f(t) of the survivors with the smallest magnitude and grow as many among the weights that were missing
before the update (so a weight just dropped is never regrown in the same update): at random (SET) or where the
magnitude of the dense gradient, computed on the batch of the step just taken, is largest (RigL). Grown weights start
at zero and so do their optimiser moments (Adam's, SGD's momentum); dropped weights and their moments are zeroed.
f(t) anneals from `prune.drop_fraction` by `prune.drop_schedule`: RigL's cosine f0 (1 + cos(π t / T_end)) / 2,
linear f0 (1 - t / T_end), or constant, with T_end = update_until x the round's steps. A layer drops
floor(f x survivors) weights, as RigL's code does, and never more than it has missing weights to grow into, so its
survivor count, and the density, stay exactly as planned.

After every update the invariants are checked (and recorded with the round's checks): pruned weights and their
optimiser moments are zero, each layer's count is unchanged, no weight was both dropped and grown. The current mask
and the update history are part of the training state (`state_dict`); SET's random growth is drawn from a generator
seeded by (seed, round, step), so a resumed round regrows the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lth.checks import require
from lth.models import prunable_weights
from lth.prune import Masks, PruneGroup, Scores, prune_by_score
from lth.schema import PruneConfig
from lth.seeds import GROWTH, derive_seed
from lth.train import Trainer

Weights = dict[str, Tensor]
# (trainer, its prunable weights, a generator seeded for this update) -> where to grow: higher first
GrowthScores = Callable[[Trainer, Weights, torch.Generator], Scores]


def initial_masks(dense: Masks, groups: list[PruneGroup], generator: torch.Generator, floor: float | None) -> Masks:
    """A random mask with each group's planned count (a group ranked together keeps `floor` per layer first)."""
    scores = {name: torch.rand(mask.shape, generator=generator).to(mask.device) for name, mask in dense.items()}
    return prune_by_score(scores, dense, groups, floor)


def drop_fraction(cfg: PruneConfig, step: int, end: float) -> float:
    """The fraction of each layer's survivors an update after `step` drops (updates end at step `end`)."""
    progress = step / end
    if cfg.drop_schedule == "cosine":
        return cfg.drop_fraction * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.drop_schedule == "linear":
        return cfg.drop_fraction * (1 - progress)
    return cfg.drop_fraction


def random_growth(trainer: Trainer, weights: Weights, generator: torch.Generator) -> Scores:
    """SET: grow at random."""
    return {name: torch.rand(w.shape, generator=generator).to(w.device) for name, w in weights.items()}


def gradient_growth(trainer: Trainer, weights: Weights, generator: torch.Generator) -> Scores:
    """RigL: grow where |dL/dw| of the dense network is largest, on the batch of the step just taken. Buffers
    (batch-norm statistics) are restored afterwards: the extra forward pass must not count as training."""
    model = trainer.model
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    x, y = trainer.last_batch()
    grads = torch.autograd.grad(F.cross_entropy(model(x).float(), y), list(weights.values()))
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    return {name: grad.abs() for name, grad in zip(weights, grads, strict=True)}


GROWTH_RULES: dict[str, GrowthScores] = {"set": random_growth, "rigl": gradient_growth}  # `static`: no updates


def _top(scores: Tensor, candidates: Tensor, count: int) -> Tensor:
    """The `count` highest-scoring of `candidates` (a bool tensor as large as `scores`)."""
    ranked = torch.where(candidates, scores.float(), -torch.inf).flatten()
    chosen = torch.zeros_like(ranked, dtype=torch.bool)
    chosen[torch.topk(ranked, count, sorted=False).indices] = True
    return chosen.view_as(candidates)


@dataclass
class MaskUpdater:
    """The mask updates of one SET or RigL round; `masks` is the round's mask dict, updated in place."""

    cfg: PruneConfig
    masks: Masks
    grow: GrowthScores
    seed: int
    round_index: int
    start: Masks = field(init=False)  # the round's first mask, to measure how far the mask moved
    history: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = dict(self.masks)

    def due(self, trainer: Trainer) -> bool:
        return trainer.step % self.cfg.update_every == 0 and trainer.step < self.end(trainer)

    def end(self, trainer: Trainer) -> float:
        return self.cfg.update_until * trainer.total_steps

    def update(self, trainer: Trainer) -> None:
        """Drop and grow in every layer after the step just taken, then check the invariants."""
        fraction = drop_fraction(self.cfg, trainer.step, self.end(trainer))
        weights = prunable_weights(trainer.model)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, GROWTH, self.round_index, trainer.step))
        scores = self.grow(trainer, weights, generator)
        dropped, grown, checks = {}, {}, dict.fromkeys(_CHECKS, True)
        for index, (name, weight) in enumerate(weights.items()):
            mask = self.masks[name]
            alive = int(mask.sum())
            count = min(int(alive * fraction), mask.numel() - alive)  # a dense layer has nowhere to grow
            kept = _top(weight.detach().abs(), mask, alive - count)
            new_growth = _top(scores[name], ~mask, count)  # among the weights missing before: none just dropped
            new = kept | new_growth
            moments = [v for v in trainer.optimizer.state.get(weight, {}).values() if _is_moment(v, weight)]
            with torch.no_grad():
                weight.mul_(new)
                for moment in moments:  # grown and dropped weights start over with no history
                    moment.mul_((new & ~new_growth).to(moment.dtype))
            trainer.masks[index].copy_(new)
            self.masks[name] = new
            lost = mask & ~kept
            dropped[name], grown[name] = int(lost.sum()), count
            checks["updates_pruned_are_zero"] &= not bool(weight[~new].any())
            checks["updates_pruned_moments_are_zero"] &= all(not bool(m[~new].any()) for m in moments)
            checks["updates_layer_counts_unchanged"] &= int(new.sum()) == alive
            checks["updates_dropped_not_regrown"] &= not bool((lost & new_growth).any())
        self.history.append(
            {
                "step": trainer.step,
                "drop_fraction": fraction,
                "dropped": dropped,
                "grown": grown,
                "changed_since_start": self.changed_since_start(),
            }
        )
        self.checks = {key: self.checks.get(key, True) and ok for key, ok in checks.items()}
        require(self.checks, self.round_index)

    def changed_since_start(self) -> float:
        """The fraction of the round's first survivors no longer in the mask."""
        gone = sum(int((self.start[name] & ~mask).sum()) for name, mask in self.masks.items())
        return gone / sum(int(mask.sum()) for mask in self.start.values())

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {n: m.clone() for n, m in self.masks.items()}, "history": self.history, "checks": self.checks}

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None:
        """The mask and history of a saved training state, into this updater and the trainer's gradient masks."""
        device = next(iter(self.masks.values())).device
        for index, name in enumerate(prunable_weights(trainer.model)):
            self.masks[name] = state["masks"][name].to(device)
            trainer.masks[index].copy_(self.masks[name])
        self.history, self.checks = state["history"], state["checks"]


_CHECKS = (
    "updates_pruned_are_zero",
    "updates_pruned_moments_are_zero",
    "updates_layer_counts_unchanged",
    "updates_dropped_not_regrown",
)


def _is_moment(value: Any, weight: Tensor) -> bool:
    """A per-weight optimiser buffer (Adam's exp_avg and exp_avg_sq, SGD's momentum), not a step counter."""
    return isinstance(value, Tensor) and value.shape == weight.shape


def updater(cfg: PruneConfig, masks: Masks, seed: int, round_index: int) -> MaskUpdater | None:
    """The mask updates of round r: SET's or RigL's in their sparse round; None for every other round."""
    grow = GROWTH_RULES.get(cfg.schedule)
    if grow is None or round_index != cfg.rounds:
        return None
    return MaskUpdater(cfg, masks, grow, seed, round_index)
