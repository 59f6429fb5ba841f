"""Masks and pruning plans: how many weights each layer keeps in a round, and which ones.

A mask is a bool tensor per prunable weight (True: the weight survives). Each round, `plan_round` splits the
prunable layers into groups and fixes how many weights each group keeps; `prune_by_score` then keeps the
highest-scoring survivors of each group (scores come from `lth.criteria`).

Iterative pruning (`prune.schedule=iterative`, Frankle & Carbin 2019) removes `rate` of the survivors every
round: hidden layers at `rate` (conv layers at `conv_rate` when set), the output layer at `output_rate`.
One-shot pruning (`schedule=oneshot`) prunes the dense trained network straight to a density: the
`target_density`, or (1 - rate)^r in round r, so one run traces the one-shot curve. How a group's density is
spread over its layers is `prune.distribution`: `uniform` (every layer at the same density), `global` (the
layers ranked together; `scope=global` means this) or `erk` (Erdős–Rényi-kernel densities, Evci et al. 2020).

A group of density d over n weights keeps round(n * d) of them, with d = (1 - rate)^r after round r: the
count is planned from the round index, not compounded, so densities never drift from the formula. Layers
ranked together keep at least `min_layer_density` each (by default one weight per output unit), so global
pruning cannot silently cut a layer, and with it the network, in two.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lth.models import prunable_weights
from lth.schema import PruneConfig

Masks = dict[str, Tensor]
Scores = dict[str, Tensor]


@dataclass(frozen=True)
class PruneGroup:
    layers: tuple[str, ...]  # prunable parameter names whose weights compete for the group's places
    kept: int  # how many of the group's weights survive the round

    @property
    def ranked_together(self) -> bool:
        return len(self.layers) > 1


def output_rate(cfg: PruneConfig) -> float:
    return cfg.rate / 2 if cfg.output_rate is None else cfg.output_rate


def distribution(cfg: PruneConfig) -> str:
    """How a density is spread over layers: `prune.distribution`, or what `prune.scope` implies."""
    if cfg.distribution is not None:
        return cfg.distribution
    return "global" if cfg.scope == "global" else "uniform"


def ignored(name: str, cfg: PruneConfig) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in cfg.ignore)


def plan_round(masks: Masks, output: str, cfg: PruneConfig, round_index: int) -> list[PruneGroup]:
    """The groups of round `round_index` and how many weights each keeps, pruning from `masks`.

    `masks` are the masks pruned from (the previous round's; the dense ones for one-shot pruning). Layers that
    `prune.ignore` matches are in no group: they are never pruned.
    """
    layers = {name: mask for name, mask in masks.items() if not ignored(name, cfg)}
    return SCHEDULES[cfg.schedule].plan(layers, output, cfg, round_index)


Plan = Callable[[Masks, str, PruneConfig, int], list[PruneGroup]]  # (layers pruned, output layer, cfg, r) -> groups


@dataclass(frozen=True)
class Schedule:
    plan: Plan  # round r's groups and how many weights each keeps
    pruned_from: Callable[[int], int]  # the round whose survivors round r prunes
    from_start: bool = False  # sparse from the start (lth.dst): the last round's mask is drawn, not pruned


SCHEDULES: dict[str, Schedule] = {}  # `prune.schedule=<name>`; lth.schema.SCHEDULES lists the same names


def register_schedule(
    name: str, *, pruned_from: Callable[[int], int], from_start: bool = False
) -> Callable[[Plan], Plan]:
    """Add a pruning schedule under `prune.schedule=<name>`."""

    def add(plan: Plan) -> Plan:
        SCHEDULES[name] = Schedule(plan, pruned_from, from_start)
        return plan

    return add


@register_schedule("iterative", pruned_from=lambda round_index: round_index - 1)
def iterative(layers: Masks, output: str, cfg: PruneConfig, round_index: int) -> list[PruneGroup]:
    """Each round keeps (1 - rate) of the last round's survivors: density (1 - rate)^r, per rate group."""
    spread = distribution(cfg)
    by_rate: dict[float, Masks] = {}
    for name, mask in layers.items():
        if name != output:
            rate = cfg.conv_rate if cfg.conv_rate is not None and mask.dim() > 2 else cfg.rate
            by_rate.setdefault(rate, {})[name] = mask
    groups = [
        group
        for rate, members in by_rate.items()
        for group in _spread(members, (1 - rate) ** round_index, spread, cfg.min_layer_density)
    ]
    if output in layers:
        groups.append(PruneGroup((output,), round(layers[output].numel() * (1 - output_rate(cfg)) ** round_index)))
    return groups


@register_schedule("oneshot", pruned_from=lambda round_index: 0)
def oneshot(layers: Masks, output: str, cfg: PruneConfig, round_index: int) -> list[PruneGroup]:
    """Round r prunes the dense network straight to `target_density`, or to (1 - rate)^r."""
    target = cfg.target_density if cfg.target_density is not None and round_index > 0 else None
    density = target if target is not None else (1 - cfg.rate) ** round_index
    return _spread(layers, density, distribution(cfg), cfg.min_layer_density)


def sparse_from_start(layers: Masks, output: str, cfg: PruneConfig, round_index: int) -> list[PruneGroup]:
    """Static, SET and RigL train one sparse round, the last (`prune.rounds`: 0, or 1 after a dense round 0), at
    `target_density` spread by `prune.distribution` (erk in their presets, as in RigL); a round before it is dense."""
    assert cfg.target_density is not None  # the schema requires it for these schedules
    density = cfg.target_density if round_index == cfg.rounds else 1.0
    return _spread(layers, density, distribution(cfg), cfg.min_layer_density)


for _method in ("static", "set", "rigl"):  # the mask updates that tell them apart are lth.dst's
    register_schedule(_method, pruned_from=lambda round_index: round_index, from_start=True)(sparse_from_start)


def _spread(layers: Masks, density: float, spread: str, min_layer_density: float | None) -> list[PruneGroup]:
    if spread == "global":
        total = round(sum(mask.numel() for mask in layers.values()) * density)
        protected = sum(int(protect(mask, mask.float(), min_layer_density).sum()) for mask in layers.values())
        return [PruneGroup(tuple(layers), max(total, protected))] if layers else []
    densities = erk_densities(layers, density) if spread == "erk" else dict.fromkeys(layers, density)
    return [PruneGroup((name,), round(mask.numel() * densities[name])) for name, mask in layers.items()]


def erk_densities(layers: Masks, density: float) -> dict[str, float]:
    """Erdős–Rényi-kernel densities (Evci et al. 2020): layer l's density is proportional to
    sum(shape_l) / prod(shape_l), scaled so the layers together keep `density`; a layer that would exceed 1 is
    kept dense and the others rescaled."""
    sizes = {name: mask.numel() for name, mask in layers.items()}
    shape_factor = {name: sum(mask.shape) / sizes[name] for name, mask in layers.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(sizes.values()) - sum(sizes[name] for name in dense)
        sparse = [name for name in layers if name not in dense]
        scale = budget / sum(shape_factor[name] * sizes[name] for name in sparse) if sparse else 0.0
        overfull = {name for name in sparse if scale * shape_factor[name] > 1}
        if not overfull:
            return {name: 1.0 if name in dense else scale * shape_factor[name] for name in layers}
        dense |= overfull


def protect(mask: Tensor, score: Tensor, min_layer_density: float | None) -> Tensor:
    """The survivors of one layer that ranking must not remove: the best-scoring weight of every output unit
    that still has one (`min_layer_density` unset), the best `min_layer_density` of the layer, or none (0)."""
    ranked = torch.where(mask, score.float(), -torch.inf)
    protected = torch.zeros_like(mask)
    if min_layer_density is None:
        rows = ranked.view(len(ranked), -1)
        alive = mask.view(len(mask), -1).any(1)
        protected.view(len(mask), -1)[torch.arange(len(rows), device=mask.device)[alive], rows.argmax(1)[alive]] = True
    elif min_layer_density > 0:
        count = min(math.ceil(min_layer_density * mask.numel()), int(mask.sum()))
        protected.view(-1)[torch.topk(ranked.flatten(), count, sorted=False).indices] = True
    return protected


def prune_by_score(
    scores: Scores, masks: Masks, groups: list[PruneGroup], min_layer_density: float | None = 0.0
) -> Masks:
    """New masks: in each group keep the planned number of highest-scoring survivors of `masks` (layers ranked
    together first keep what `protect` reserves for each of them)."""
    new_masks = dict(masks)
    for group in groups:
        floor = min_layer_density if group.ranked_together else 0.0
        reserved = {name: protect(masks[name], scores[name], floor) for name in group.layers}
        ranked = torch.cat(
            [torch.where(masks[n] & ~reserved[n], scores[n].float(), -torch.inf).flatten() for n in group.layers]
        )
        keep = torch.cat([reserved[n].flatten() for n in group.layers])
        extra = group.kept - int(keep.sum())
        keep[torch.topk(ranked, max(extra, 0), sorted=False).indices] = True
        sizes = [masks[n].numel() for n in group.layers]
        for name, kept in zip(group.layers, keep.split(sizes), strict=True):
            new_masks[name] = kept.view_as(masks[name]) & masks[name]
    return new_masks


def dense_masks(model: nn.Module) -> Masks:
    return {name: torch.ones_like(weight, dtype=torch.bool) for name, weight in prunable_weights(model).items()}


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the pruned weights in place."""
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            weight.mul_(masks[name])


def density(masks: Masks) -> float:
    """Fraction of prunable weights still unpruned."""
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def remaining_parameters(model: nn.Module, masks: Masks) -> int:
    """Parameters (biases and norm layers included) not pruned."""
    return sum(p.numel() for p in model.parameters()) - sum(m.numel() - int(m.sum()) for m in masks.values())


def parameter_density(model: nn.Module, masks: Masks) -> float:
    """Fraction of all parameters (biases and norm layers included) still unpruned."""
    return remaining_parameters(model, masks) / sum(p.numel() for p in model.parameters())


def layer_densities(masks: Masks) -> dict[str, float]:
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}


def collapsed_layers(masks: Masks) -> list[str]:
    """Layers with no weight left: the network is cut in two there."""
    return [name for name, m in masks.items() if not m.any()]
