"""Masks, pruning criteria and pruning.

A mask is a bool tensor per prunable weight (True: the weight survives). A criterion scores every weight
(higher: more worth keeping): `magnitude` |w_final| (the ticket), `magnitude_increase` |w_final| - |w_init|
(Zhou et al. 2019), `random` (the random-pruning control: with `scope=layerwise` it removes exactly as many
weights per layer as the ticket does). Layers are pruned in groups: with
`scope=layerwise` every layer is its own group; with `scope=global` all hidden layers form one group ranked
together. The output layer is always a group of its own, at `output_rate`. After round r a group pruned at
rate p keeps round(n * (1 - p)^r) of its n weights: the count is planned from the round index, not
compounded, so the density never drifts by more than one weight from the formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lth.config import PruneConfig
from lth.models import output_layer, prunable_weights

Masks = dict[str, Tensor]


@dataclass(frozen=True)
class PruneGroup:
    layers: tuple[str, ...]  # prunable parameter names ranked together
    rate: float  # fraction of survivors removed per round

    def kept(self, sizes: dict[str, int], round_index: int) -> int:
        """How many weights of the group survive after `round_index` pruning rounds."""
        total = sum(sizes[name] for name in self.layers)
        return round(total * (1 - self.rate) ** round_index)


def output_rate(cfg: PruneConfig) -> float:
    return cfg.rate / 2 if cfg.output_rate is None else cfg.output_rate


def prune_groups(model: nn.Module, cfg: PruneConfig) -> list[PruneGroup]:
    output = output_layer(model)
    hidden = [name for name in prunable_weights(model) if name != output]
    if cfg.scope == "global":
        groups = [PruneGroup(tuple(hidden), cfg.rate)] if hidden else []
    else:
        groups = [PruneGroup((name,), cfg.rate) for name in hidden]
    return [*groups, PruneGroup((output,), output_rate(cfg))]


def dense_masks(model: nn.Module) -> Masks:
    return {name: torch.ones_like(weight, dtype=torch.bool) for name, weight in prunable_weights(model).items()}


def criterion_scores(
    criterion: str, final: dict[str, Tensor], init: dict[str, Tensor], masks: Masks, generator: torch.Generator
) -> dict[str, Tensor]:
    """Score each prunable weight by `criterion` (names as in `masks`); higher scores are kept."""
    if criterion == "magnitude":
        return {name: final[name].abs() for name in masks}
    if criterion == "magnitude_increase":
        return {name: final[name].abs() - init[name].abs() for name in masks}
    if criterion == "random":
        return {name: torch.rand(mask.shape, generator=generator).to(mask.device) for name, mask in masks.items()}
    raise ValueError(f"unknown pruning criterion {criterion!r}")


def prune_by_score(scores: dict[str, Tensor], masks: Masks, groups: list[PruneGroup], round_index: int) -> Masks:
    """Masks for `round_index`: in each group keep the planned number of highest-scoring survivors."""
    sizes = {name: mask.numel() for name, mask in masks.items()}
    new_masks = dict(masks)
    for group in groups:
        ranked = torch.cat([torch.where(masks[n], scores[n].float(), -torch.inf).flatten() for n in group.layers])
        keep = torch.zeros_like(ranked, dtype=torch.bool)
        keep[torch.topk(ranked, group.kept(sizes, round_index), sorted=False).indices] = True
        for name, kept in zip(group.layers, keep.split([sizes[n] for n in group.layers]), strict=True):
            new_masks[name] = kept.view_as(masks[name]) & masks[name]
    return new_masks


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the pruned weights in place."""
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            weight.mul_(masks[name])


def density(masks: Masks) -> float:
    """Fraction of prunable weights still unpruned."""
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def parameter_density(model: nn.Module, masks: Masks) -> float:
    """Fraction of all parameters (biases and norm layers included) still unpruned."""
    total = sum(p.numel() for p in model.parameters())
    pruned = sum(m.numel() - int(m.sum()) for m in masks.values())
    return (total - pruned) / total


def layer_densities(masks: Masks) -> dict[str, float]:
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}
