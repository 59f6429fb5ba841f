"""Pruning criteria: which survivors a round keeps (higher score: kept).

After training (the lottery ticket and its controls):
- `magnitude`: |w_final|, the ticket (Frankle & Carbin 2019).
- `magnitude_increase`: |w_final| - |w_init| (Zhou et al. 2019's best mask criterion).
- `random`: uniform scores, the random-pruning control (with layerwise groups: exactly the ticket's counts).
At the weights the pruned round starts from (pruning at initialisation, compared in Frankle et al. 2021):
- `snip`: |g ⊙ w| on a class-balanced batch (Lee et al. 2019).
- `grasp`: w ⊙ Hg, the weights whose removal least reduces the gradient flow (Wang et al. 2020; their
  score -w ⊙ Hg removes the largest, so the kept score is its negative); logits at temperature 200 as in
  their code.
- `synflow`: |w ⊙ dR/dw| with R the summed output of the network with every parameter made positive on an
  all-ones input, data-free, pruned and re-scored `synflow_iterations` times with the density shrinking
  exponentially (Tanaka et al. 2020).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.data import Dataset
from lth.models import prunable_weights
from lth.prune import Masks, PruneGroup, Scores, prune_by_score
from lth.schema import PruneConfig

Weights = dict[str, Tensor]
GRASP_TEMPERATURE = 200.0


@dataclass
class Scoring:
    """What a criterion may look at when round r prunes from round r-1 (or, one-shot, from round 0)."""

    cfg: PruneConfig
    model: nn.Module  # the run's network (not modified: scoring works on a copy)
    masks: Masks  # the survivors being pruned from
    final: Weights  # the trained weights of the round pruned from
    init: Weights  # θ0
    start: Weights  # the weights the pruned round starts from before masking (θk for a ticket)
    data: Dataset
    generator: torch.Generator  # seeded per round: random scores and the scoring batch

    def prune(self, groups: list[PruneGroup], invert: bool = False) -> Masks:
        """The new masks: each group keeps its planned count of the highest scores (the lowest: `invert`)."""
        criterion = CRITERIA[self.cfg.criterion]
        if criterion.prune is not None:
            return criterion.prune(self, groups, invert)
        scores = criterion.score(self)
        return prune_by_score(_signed(scores, invert), self.masks, groups, self.cfg.min_layer_density)

    def _scores(self, criterion: str) -> Scores:
        return CRITERIA[criterion].score(self)

    def _network_at_start(self, masks: Masks) -> tuple[nn.Module, dict[str, nn.Parameter]]:
        """A scratch copy of the network at its start weights with `masks` applied."""
        network = copy.deepcopy(self.model)
        network.load_state_dict(self.start)
        weights = {name: w for name, w in prunable_weights(network).items() if name in masks}
        with torch.no_grad():
            for name, weight in weights.items():
                weight.mul_(masks[name])
        return network, weights

    def _batch(self) -> tuple[Tensor, Tensor]:
        """`score_examples_per_class` training examples of every class, drawn with the round's generator."""
        labels = self.data.train.y
        picked = []
        for label in range(self.data.num_classes):
            members = (labels == label).nonzero().flatten().cpu()
            order = torch.randperm(len(members), generator=self.generator)
            picked.append(members[order[: self.cfg.score_examples_per_class]])
        chosen = torch.cat(picked).to(labels.device)
        return self.data.train.inputs(chosen), labels[chosen]

    def _positive_network(self) -> nn.Module:
        """A float64 copy of the network in eval mode (float64: the product of all |w| along a deep path underflows
        in float32), for SynFlow's scoring."""
        return copy.deepcopy(self.model).double().eval()

    def _synflow_scores(self, network: nn.Module, masks: Masks) -> Scores:
        """Scores of the start weights under `masks`, every parameter and buffer made positive."""
        network.load_state_dict(self.start)
        network.zero_grad(set_to_none=True)
        weights = {name: w for name, w in prunable_weights(network).items() if name in masks}
        with torch.no_grad():
            for name, weight in weights.items():
                weight.mul_(masks[name])
            for value in network.state_dict().values():
                value.abs_()
        ones = torch.ones(1, *self.data.input_shape, dtype=torch.float64, device=self.data.train.y.device)
        network(ones).sum().backward()
        return {name: (weight.grad * weight).abs().detach().float() for name, weight in weights.items()}


def _signed(scores: Scores, invert: bool) -> Scores:
    return {name: -score for name, score in scores.items()} if invert else scores


@dataclass(frozen=True)
class Criterion:
    score: Callable[[Scoring], Scores]  # higher: kept
    prune: Callable[[Scoring, list[PruneGroup], bool], Masks] | None = None  # its own pruning (re-scoring in steps)


CRITERIA: dict[str, Criterion] = {}  # `prune.criterion=<name>`; lth.schema.CRITERIA lists the same names


def register(
    name: str, *, prune: Callable[[Scoring, list[PruneGroup], bool], Masks] | None = None
) -> Callable[[Callable[[Scoring], Scores]], Callable[[Scoring], Scores]]:
    """Add a criterion: a function from what a round may look at (`Scoring`) to a score per weight."""

    def add(score: Callable[[Scoring], Scores]) -> Callable[[Scoring], Scores]:
        CRITERIA[name] = Criterion(score, prune)
        return score

    return add


@register("magnitude")
def magnitude(s: Scoring) -> Scores:
    return {name: s.final[name].abs() for name in s.masks}


@register("magnitude_increase")
def magnitude_increase(s: Scoring) -> Scores:
    return {name: s.final[name].abs() - s.init[name].abs() for name in s.masks}


@register("random")
def random(s: Scoring) -> Scores:
    return {name: torch.rand(m.shape, generator=s.generator).to(m.device) for name, m in s.masks.items()}


@register("snip")
def snip(s: Scoring) -> Scores:
    network, weights = s._network_at_start(s.masks)
    x, y = s._batch()
    grads = torch.autograd.grad(F.cross_entropy(network(x), y), list(weights.values()))
    return {name: (grad * weight).abs().detach() for (name, weight), grad in zip(weights.items(), grads, strict=True)}


@register("grasp")
def grasp(s: Scoring) -> Scores:
    network, weights = s._network_at_start(s.masks)
    x, y = s._batch()
    params = list(weights.values())
    gradient = torch.autograd.grad(F.cross_entropy(network(x) / GRASP_TEMPERATURE, y), params)
    with_graph = torch.autograd.grad(F.cross_entropy(network(x) / GRASP_TEMPERATURE, y), params, create_graph=True)
    flow = sum((g * g_fixed).sum() for g, g_fixed in zip(with_graph, gradient, strict=True))
    hessian_gradient = torch.autograd.grad(flow, params)
    return {name: (weight * hg).detach() for (name, weight), hg in zip(weights.items(), hessian_gradient, strict=True)}


def synflow_prune(s: Scoring, groups: list[PruneGroup], invert: bool) -> Masks:
    masks = s.masks
    iterations = s.cfg.synflow_iterations
    network = s._positive_network()  # one copy, re-masked each iteration
    alive = {group: sum(int(masks[name].sum()) for name in group.layers) for group in groups}
    for step in range(1, iterations + 1):
        # the kept count shrinks exponentially from the survivors to the plan, reaching it exactly at the end
        stage = [
            PruneGroup(g.layers, round(alive[g] * (g.kept / alive[g]) ** (step / iterations)) if alive[g] else 0)
            for g in groups
        ]
        scores = _signed(s._synflow_scores(network, masks), invert)
        masks = prune_by_score(scores, masks, stage, s.cfg.min_layer_density)
    return masks


@register("synflow", prune=synflow_prune)
def synflow(s: Scoring) -> Scores:  # one scoring pass; pruning with it iterates (`synflow_prune`)
    return s._synflow_scores(s._positive_network(), s.masks)


def shuffle_within_layers(masks: Masks, generator: torch.Generator) -> Masks:
    """Each layer's mask permuted at random (Zhou et al.'s shuffle control): the same densities, other weights."""
    shuffled = {}
    for name, mask in masks.items():
        order = torch.randperm(mask.numel(), generator=generator).to(mask.device)
        shuffled[name] = mask.flatten()[order].view_as(mask)
    return shuffled


def signed_constant(start: Weights, init: Weights, names: list[str]) -> Weights:
    """Zhou et al.'s signed-constant control: each weight of `names` set to ± its layer's initial standard
    deviation, keeping the sign it starts with."""
    return {key: value.sign() * init[key].std() if key in names else value for key, value in start.items()}
