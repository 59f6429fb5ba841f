"""Mask controls (`prune.control`, Zhou et al. 2019): what a control changes about the ticket. Adding one is one
`register` call here (its name joins `lth.schema.CONTROLS`, which a test keeps equal to this registry).

- `none`: the ticket itself;
- `invert`: the criterion's lowest scores are kept instead of its highest;
- `shuffle_layer`: each layer's mask permuted at random (the same layer densities, other weights);
- `signed_constant`: the survivors start at ± their layer's initial standard deviation, keeping their sign.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lth.criteria import shuffle_within_layers, signed_constant
from lth.prune import Masks

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Control:
    invert: bool = False  # keep the lowest scores
    masks: Callable[[Masks, torch.Generator], Masks] | None = None  # alters round r's masks (seeded per round)
    start: Callable[[Weights, Weights, list[str]], Weights] | None = None  # alters (start, θ0, prunable) weights


CONTROLS: dict[str, Control] = {}


def register(name: str, control: Control) -> Control:
    """Add a control under `prune.control=<name>`."""
    CONTROLS[name] = control
    return control


register("none", Control())
register("invert", Control(invert=True))
register("shuffle_layer", Control(masks=shuffle_within_layers))
register("signed_constant", Control(start=signed_constant))
