"""Pruning structures (`prune.structure`): what one pruning decision removes. Masks stay weight masks whatever the
structure, so controls, `masks_from`, replicates, resume and the report work unchanged.

- `weight`: single weights (Frankle & Carbin's tickets).
- `neuron`: whole output units of the hidden linear layers (a row of the weight); the output layer's units are the
  classes, so it is pruned by weight.
- `channel`: whole output filters of the conv layers; linear layers are pruned by weight.
- `head`: whole attention heads of each `SelfAttention` (the q, k and v rows of the head and the out-projection
  columns that read it); the other layers are pruned by weight.
- `nm`: N:M semi-structured sparsity (`prune.nm=[N, M]`, the pattern GPUs accelerate at 2:4): in every group of M
  consecutive input weights of a unit (PyTorch's layout: a linear row, a conv filter flattened) at most N survive.

A unit of a structure is scored by the criterion's mean score over its surviving weights (for magnitude the L1 norm
of the unit over its size, Li et al. 2017's filter norm), and the plan counts units instead of weights: round r
keeps (1 - rate)^r of each layer's units with the same exact-count arithmetic (`lth.prune.plan_round`), so the rates,
schedules and distributions all apply. A pruned neuron or channel keeps its bias (masks are weight masks): it
outputs the constant act(bias), which `lth.compact` folds into the next layer, and the next layer's weights that
read it are counted as dead (`lth.compact.dead_units`). With nm, round r keeps the planned count but never more than
the N best of each group allow, so the density stays at N/M until the schedule goes below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lth.criteria import CRITERIA, Scoring
from lth.errors import ConfigError
from lth.models import output_layer, prunable_weights
from lth.models.transformer import SelfAttention
from lth.prune import Masks, PruneGroup, distribution, ignored, plan_round, prune_by_score
from lth.schema import PruneConfig


@dataclass(frozen=True)
class Part:
    """One layer's share of a unit set: along `axis` (0: rows, 1: columns) each unit owns `span` consecutive
    indices."""

    weight: str  # prunable weight name
    axis: int
    span: int = 1

    def per_unit(self, tensor: Tensor, units: int) -> Tensor:
        """`tensor` (the weight's shape) as (units, the unit's entries in this layer)."""
        return tensor.movedim(self.axis, 0).reshape(units, -1)

    def spread(self, alive: Tensor, shape: torch.Size) -> Tensor:
        """A per-unit bool vector as a mask of the weight's shape."""
        view = [1] * len(shape)
        view[self.axis] = -1
        return alive.repeat_interleave(self.span).view(view).expand(shape)


@dataclass(frozen=True)
class UnitSet:
    """Units pruned together as one layer of the plan, named by their first layer's weight."""

    parts: tuple[Part, ...]
    units: int
    conv: bool  # planned as a conv layer (`prune.conv_rate`)

    @property
    def name(self) -> str:
        return self.parts[0].weight

    def plan_shape(self) -> tuple[int, ...]:
        """The shape of the set's mask in the plan: the units as one row, 4-D for a conv layer (which
        `lth.prune.iterative` recognises by its dimensions)."""
        return (1, self.units, 1, 1) if self.conv else (1, self.units)

    def total(self, values: Masks) -> Tensor:
        """Per unit, the sum of `values` (tensors of the weights' shapes) over the unit's entries."""
        return sum(part.per_unit(values[part.weight].float(), self.units).sum(1) for part in self.parts)

    def size(self, masks: Masks) -> int:
        return sum(part.per_unit(masks[part.weight], self.units).shape[1] for part in self.parts)


UnitFinder = Callable[[nn.Module, PruneConfig], list[UnitSet]]


@dataclass(frozen=True)
class Structure:
    """What a structure prunes: units (rows, filters, heads) found in a model, or a pattern of weights."""

    units: UnitFinder | None = None  # its unit sets in a model (None: every weight is its own unit)
    needs: str = ""  # what a model must have for it (refused without: no unit set found)
    # the weights a pruned round may keep at most, from a layer's (mask, scores, cfg); the N:M pattern
    allowed: Callable[[Tensor, Tensor, PruneConfig], Tensor] | None = None


STRUCTURES: dict[str, Structure] = {}  # `prune.structure=<name>`; lth.schema.STRUCTURES lists the same names


def register(name: str, structure: Structure) -> Structure:
    """Add a structure under `prune.structure=<name>`."""
    STRUCTURES[name] = structure
    return structure


def output_rows(kind: type[nn.Module]) -> UnitFinder:
    """Each output row of the `kind` layers (not the output layer, whose rows are the classes) as a unit."""

    def find(model: nn.Module, cfg: PruneConfig) -> list[UnitSet]:
        modules, output = dict(model.named_modules()), output_layer(model)
        layers = [(w, modules[w.removesuffix(".weight")]) for w in prunable_weights(model) if w != output]
        return [UnitSet((Part(w, 0),), m.weight.shape[0], m.weight.dim() > 2) for w, m in layers if isinstance(m, kind)]

    return find


def attention_heads(model: nn.Module, cfg: PruneConfig) -> list[UnitSet]:
    """Each head of each SelfAttention: its rows of q, k and v and the columns of the out projection reading it."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, SelfAttention):
            span = module.q.out_features // module.heads
            rows = tuple(Part(f"{name}.{p}.weight", 0, span) for p in ("q", "k", "v"))
            found.append(UnitSet((*rows, Part(f"{name}.out.weight", 1, span)), module.heads, conv=False))
    return found


def best_n(mask: Tensor, score: Tensor, cfg: PruneConfig) -> Tensor:
    """The survivors among the N best-scoring of each group of M consecutive input weights (all survivors of a
    group with at most N)."""
    n, m = cfg.nm
    ranked = torch.where(mask, score.float(), -torch.inf).reshape(mask.shape[0], -1, m)
    best = torch.zeros_like(ranked, dtype=torch.bool)
    best.scatter_(2, ranked.topk(n, dim=2).indices, True)
    return best.view_as(mask) & mask


register("weight", Structure())
register("neuron", Structure(output_rows(nn.Linear), needs="hidden linear layers"))
register("channel", Structure(output_rows(nn.Conv2d), needs="conv layers"))
register("head", Structure(attention_heads, needs="attention layers (SelfAttention)"))
register("nm", Structure(allowed=best_n))


def unit_sets(model: nn.Module, cfg: PruneConfig) -> list[UnitSet]:
    """The unit sets of `cfg.structure` in `model`, without those of layers `prune.ignore` names."""
    find = STRUCTURES[cfg.structure].units
    found = find(model, cfg) if find is not None else []
    return [units for units in found if not any(ignored(part.weight, cfg) for part in units.parts)]


def counted(masks: Masks, sets: list[UnitSet]) -> Masks:
    """What the plan counts: a unit mask per unit set (a unit survives while any of its weights does), the weight
    mask of every other layer."""
    covered = {part.weight for units in sets for part in units.parts}
    out = {name: mask for name, mask in masks.items() if name not in covered}
    for units in sets:
        out[units.name] = units.total(masks).gt(0).view(units.plan_shape())
    return out


def plan(model: nn.Module, masks: Masks, cfg: PruneConfig, round_index: int) -> list[PruneGroup]:
    """Round r's groups and kept counts, pruning from `masks`, in the units of the structure (`counted`); a pruned
    round keeps no more than the structure's pattern allows."""
    groups = plan_round(counted(masks, unit_sets(model, cfg)), output_layer(model), cfg, round_index)
    allowed = STRUCTURES[cfg.structure].allowed
    if allowed is None or round_index == 0:  # round 0 is the dense network
        return groups
    most = {name: int(allowed(masks[name], masks[name].float(), cfg).sum()) for g in groups for name in g.layers}
    return [PruneGroup(g.layers, min(g.kept, sum(most[name] for name in g.layers))) for g in groups]


def prune(scoring: Scoring, round_index: int, invert: bool) -> tuple[Masks, list[PruneGroup]]:
    """Round r's masks and the groups they were planned in: the criterion's scores pruned in the structure's
    units (a criterion with its own pruning, SynFlow's re-scoring, re-scores single weights only)."""
    cfg, model, masks = scoring.cfg, scoring.model, scoring.masks
    structure = STRUCTURES[cfg.structure]
    groups = plan(model, masks, cfg, round_index)
    sets = unit_sets(model, cfg)
    if structure.allowed is None and not sets:
        return scoring.prune(groups, invert=invert), groups
    scores = CRITERIA[cfg.criterion].score(scoring)
    scores = {name: -score.float() if invert else score.float() for name, score in scores.items()}
    if structure.allowed is not None:  # weights outside the pattern cannot be kept
        for name in (name for group in groups for name in group.layers):
            scores[name] = torch.where(structure.allowed(masks[name], scores[name], cfg), scores[name], -torch.inf)
    for units in sets:
        surviving = {part.weight: masks[part.weight] for part in units.parts}
        weighted = {part.weight: scores[part.weight] * masks[part.weight] for part in units.parts}
        mean = units.total(weighted) / units.total(surviving).clamp(min=1)
        scores[units.name] = mean.view(units.plan_shape())
    kept = prune_by_score(scores, counted(masks, sets), groups, cfg.min_layer_density)
    new_masks = {name: kept.get(name, mask) for name, mask in masks.items()}
    for units in sets:
        alive = kept[units.name].flatten()
        for part in units.parts:
            new_masks[part.weight] = part.spread(alive, masks[part.weight].shape) & masks[part.weight]
    return new_masks, groups


def check(model: nn.Module, masks: Masks, groups: list[PruneGroup], cfg: PruneConfig, round_index: int) -> dict:
    """The round's proofs of its structure (lth.checks records them): each group kept its planned count of units;
    every unit survives whole or has no surviving weight; after round 0 every layer holds its pattern (at most N of
    every M)."""
    sets, allowed = unit_sets(model, cfg), STRUCTURES[cfg.structure].allowed
    units = counted(masks, sets)
    proofs = {"end_density_as_planned": all(sum(int(units[n].sum()) for n in g.layers) == g.kept for g in groups)}
    if sets:
        alive = [(unit_set.total(masks), unit_set.size(masks)) for unit_set in sets]
        proofs["structure_units_whole"] = all(bool(((n == 0) | (n == size)).all()) for n, size in alive)
    if allowed is not None and round_index > 0:
        pruned = [name for name in masks if not ignored(name, cfg)]
        held = all(torch.equal(allowed(masks[name], masks[name].float(), cfg), masks[name]) for name in pruned)
        proofs["structure_pattern_held"] = held
    return proofs


def check_model(model: nn.Module, cfg: PruneConfig) -> None:
    """ConfigError (one line) when `cfg.structure` does not fit `model` or the plan: units ranked across layers
    (global or ERK distributions), channel without conv layers, head without attention, nm on a layer whose input
    size is not a multiple of M."""
    structure = STRUCTURES[cfg.structure]
    if structure.units is not None and distribution(cfg) != "uniform":
        # a unit holds hundreds of weights: ranked against single weights or other layers' units, the plan would
        # count units of different sizes as equals
        key, allowed = ("distribution", "uniform") if cfg.distribution is not None else ("scope", "layerwise")
        raise ConfigError(
            f"prune.{key}={getattr(cfg, key)} is not allowed with prune.structure={cfg.structure}; prune.{key} must "
            f"be {allowed} (each layer's units are counted and ranked on their own)"
        )
    if structure.needs and not unit_sets(model, cfg):
        raise ConfigError(
            f"prune.structure={cfg.structure} is not allowed for model {type(model).__name__}: it has no "
            f"{structure.needs} to prune; prune.structure must be one whose units it has (weight and nm fit any model)"
        )
    if structure.allowed is None:
        return
    n, m = cfg.nm
    for name, weight in prunable_weights(model).items():
        inputs = weight[0].numel()
        if not ignored(name, cfg) and inputs % m:
            raise ConfigError(
                f"prune.nm=[{n}, {m}] is not allowed for {name}: its {inputs} inputs per unit are not a multiple of "
                f"M={m}; prune.nm must have an M dividing every pruned layer's inputs (or prune.ignore=[{name}])"
            )
