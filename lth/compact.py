"""Compaction: the smaller dense network that computes what a masked ticket computes, and its dead units.

A unit (a neuron of a linear layer, an output channel of a convolution) of a pruned network is *dead* when it has
no surviving incoming weight (it outputs a constant, act(bias)) or no surviving outgoing weight (nothing reads
it). Removing dead units, and the next layer's inputs that read them, gives a physically smaller dense network.
`compact` does this exactly, so the compacted model's outputs equal the masked model's (up to float rounding):

- a unit nothing reads is removed with its incoming weights;
- a unit with no incoming survivor outputs a constant c = post(bias) (post: the per-channel maps between the two
  layers, batch norm in eval mode, ReLU, pooling). It is removed when c = 0; when c ≠ 0 it is folded into the next
  layer's bias (bias += c · the sum of its outgoing weights) and removed where that is exact: a linear next layer,
  or a convolution without padding. A constant channel feeding a zero-padded convolution is kept (the padding
  makes its contribution differ at the borders);
- removals repeat until nothing changes (a removed unit can leave its inputs unread, or its readers constant).

Never cut: the network's inputs (the interface stays: the same input shape) and its outputs (the classes). In a
ResNet the residual stream (the stem, each block's second convolution and its shortcut) is not cut: the sums need
equal shapes; only each block's inner channels (conv1 → bn1 → ReLU → conv2) are compacted. Supported: lth's
LeNet-300-100 and its convnets built as `ConvClassifier` (LeNet-5, Conv-2/4/6, VGG) and ResNets; other models
(torchvision's) are refused with a ConfigError.

The compacted model is the same class with smaller layers, so its state dict alone fixes its shape:
`resize_to(model, state)` rebuilds it from a freshly built model of the original config (lth.export's
`load_ticket` does this for `lth export --compact` folders).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.errors import ConfigError
from lth.models.layers import ConvClassifier
from lth.models.lenet import LeNet300100
from lth.models.resnet import ResNet

RELU = "relu"  # in a link's `post`: a functional ReLU in the model's forward (no module of its own)
_PER_CHANNEL = (nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)
_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Link:
    """The output units of layer `producer` feed layer `consumer` through the per-channel maps `post`."""

    producer: str  # module name
    consumer: str
    post: tuple[str, ...] = ()  # module names (or RELU) applied per channel between the two
    spatial: int = 1  # consumer inputs per producer unit: H·W when a flatten lies between a conv and a linear


def links(model: nn.Module) -> list[Link]:
    """Where `model`'s units can be removed: the producer → consumer pairs of its layers (ConfigError if the
    architecture is not one `compact` understands)."""
    if isinstance(model, LeNet300100):
        return [Link("fc1", "fc2", (RELU,)), Link("fc2", "fc3", (RELU,))]
    if isinstance(model, ResNet):
        return [
            Link(f"blocks.{index}.conv1", f"blocks.{index}.conv2", (f"blocks.{index}.bn1", RELU))
            for index in range(len(model.blocks))
        ]
    if isinstance(model, ConvClassifier):
        return _classifier_links(model)
    raise ConfigError(
        f"cannot compact a {type(model).__module__}.{type(model).__name__}: lth compacts its own LeNet-300-100, "
        "ConvClassifier convnets (lenet5, conv2/4/6, vgg*) and ResNets only"
    )


def _classifier_links(model: ConvClassifier) -> list[Link]:
    sequence = [(f"features.{n}", m) for n, m in model.features.named_children()]
    sequence += [("flatten", None)]
    sequence += [(f"hidden.{n}", m) for n, m in model.hidden.named_children()] + [("fc", model.fc)]
    out: list[Link] = []
    producer: tuple[str, nn.Module] | None = None
    post: list[str] = []
    flattened = False
    for name, module in sequence:
        if module is None:
            flattened = True
        elif isinstance(module, _LAYERS):
            _check_layer(name, module)
            if producer is not None:
                spatial = 1
                if flattened and isinstance(producer[1], nn.Conv2d):
                    channels = producer[1].out_channels
                    if not isinstance(module, nn.Linear) or module.in_features % channels:
                        raise ConfigError(f"cannot compact: {name} does not read whole channels of {producer[0]}")
                    spatial = module.in_features // channels
                out.append(Link(producer[0], name, tuple(post), spatial))
            producer, post, flattened = (name, module), [], False
        elif isinstance(module, _PER_CHANNEL):
            if isinstance(module, nn.AvgPool2d) and module.padding not in (0, (0, 0)):
                raise ConfigError(f"cannot compact: {name} averages over padding, so constants do not stay constant")
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and not module.track_running_stats:
                raise ConfigError(f"cannot compact: {name} normalises with batch statistics")
            post.append(name)
        else:
            raise ConfigError(f"cannot compact: {name} is a {type(module).__name__}, which compact does not know")
    return out


def _check_layer(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise ConfigError(f"cannot compact: {name} is a grouped convolution")


# Dead units from the masks alone.


def mask_links(model_name: str, masks: dict[str, Tensor]) -> list[Link] | None:
    """The links of an lth model from its masks' names and shapes, without building it (None: not one of lth's
    compactable families). The same pairs as `links(model)`; `post` is left empty (masks do not need it)."""
    names = [name.removesuffix(".weight") for name in masks]
    if model_name.startswith("resnet"):
        inner = [n for n in names if n.startswith("blocks.") and n.endswith(".conv1")]
        return [Link(n, n.removesuffix("conv1") + "conv2") for n in inner]
    if model_name in ("lenet_300_100", "lenet5", "conv2", "conv4", "conv6") or model_name.startswith("vgg"):
        out = []
        for producer, consumer in itertools.pairwise(names):
            shape_p, shape_c = masks[f"{producer}.weight"].shape, masks[f"{consumer}.weight"].shape
            spatial = shape_c[1] // shape_p[0] if len(shape_p) == 4 and len(shape_c) == 2 else 1
            out.append(Link(producer, consumer, (), spatial))
        return out
    return None


def dead_units(masks: dict[str, Tensor], link_list: list[Link]) -> dict[str, dict[str, int | None]]:
    """Per prunable layer (by weight name): `units` (outputs), `no_incoming` (units all of whose incoming weights are
    pruned), `no_outgoing` (units none of whose outgoing weights survive; None where the reader is not a plain next
    layer: the output layer, a ResNet's residual stream), and `dead`: the units that carry no signal once dead units
    are removed repeatedly (a unit whose only readers or only sources are dead is dead too; None where
    `no_outgoing` is). From the masks only: a unit with no incoming weight still outputs act(bias), which `compact`
    folds into the next layer; here it counts as dead."""
    weights = {name.removesuffix(".weight"): mask for name, mask in masks.items()}
    alive = _fixpoint(weights, link_list, lambda producer, unit: True)
    by_producer = {link.producer: link for link in link_list}
    out: dict[str, dict[str, int | None]] = {}
    for name, mask in weights.items():
        rows = mask.flatten(1).any(1)
        entry: dict[str, int | None] = {"units": mask.shape[0], "no_incoming": int((~rows).sum())}
        link = by_producer.get(name)
        if link is None:
            entry.update(no_outgoing=None, dead=None)
        else:
            read = _grouped(weights[link.consumer], mask.shape[0], link.spatial).any(dim=(0, 2))
            entry.update(no_outgoing=int((~read).sum()), dead=int((~alive[name]).sum()))
        out[f"{name}.weight"] = entry
    return out


def model_dead_units(model: nn.Module, masks: dict[str, Tensor]) -> dict[str, dict[str, int | None]] | None:
    """`dead_units` of `model`'s masks (a round's metrics record it), or None for a model `compact` does not know."""
    try:  # only links() refuses
        return dead_units({name: mask.cpu() for name, mask in masks.items()}, links(model))
    except ConfigError:
        return None


def _grouped(weight: Tensor, units: int, spatial: int) -> Tensor:
    """A consumer's weight as (outputs, producer units, inputs per unit: spatial positions × kernel)."""
    return weight.reshape(weight.shape[0], units, -1) if weight.dim() > 2 else weight.reshape(-1, units, spatial)


def _fixpoint(weights: dict[str, Tensor], link_list: list[Link], remove_constant: Any) -> dict[str, Tensor]:
    """Alive units per producer after removing, until nothing changes, the unread units and the units with no
    incoming weight for which `remove_constant(link, unit)` says yes (it may fold them first)."""
    by_producer = {link.producer: link for link in link_list}
    by_consumer = {link.consumer: link for link in link_list}
    alive = {link.producer: torch.ones(weights[link.producer].shape[0], dtype=torch.bool) for link in link_list}

    def inputs(name: str) -> Tensor:
        """The weight of `name` restricted to its alive inputs, flattened per output unit."""
        weight = weights[name]
        source = by_consumer.get(name)
        if source is None:
            return weight.flatten(1)
        keep = alive[source.producer]
        return _grouped(weight, keep.numel(), source.spatial)[:, keep].flatten(1)

    changed = True
    while changed:
        changed = False
        for link in link_list:
            units = alive[link.producer]
            incoming = inputs(link.producer).ne(0).any(1)
            reader = weights[link.consumer]
            rows = alive[link.consumer] if link.consumer in by_producer else slice(None)
            read = _grouped(reader, units.numel(), link.spatial)[rows].ne(0).any(dim=(0, 2))
            candidates = (units & ~read).nonzero().flatten().tolist()
            candidates += (units & read & ~incoming).nonzero().flatten().tolist()
            for unit in candidates:
                if int(units.sum()) == 1:
                    break  # never empty a layer: an empty conv cannot run, and one unit costs nothing
                if not read[unit] or remove_constant(link, unit):
                    units[unit] = False
                    changed = True
    return alive


# Compaction.


@dataclass
class Compacted:
    model: nn.Module  # the compacted model, eval mode
    kept: dict[str, list[int]]  # per producer module: the original indices of its kept units
    units: dict[str, list[int]]  # per producer module: [units before, units after]
    constant_kept: dict[str, int]  # per producer module: constant units kept (they feed a padded conv)
    notes: list[str] = field(default_factory=list)  # what was not cut, and why

    @property
    def removed(self) -> int:
        return sum(before - after for before, after in self.units.values())


def compact(model: nn.Module, masks: dict[str, Tensor]) -> Compacted:
    """The compacted copy of `model` with `masks` applied (see the module docstring); `model` is not changed.
    ConfigError when the architecture is not supported."""
    model = copy.deepcopy(model).cpu().eval()
    link_list = links(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name.removesuffix(".weight")].weight.mul_(mask.to(torch.bool))
    layer_names = list(dict.fromkeys(name for link in link_list for name in (link.producer, link.consumer)))
    weights = {name: modules[name].weight.detach().double().clone() for name in layer_names}
    biases = {
        name: None if modules[name].bias is None else modules[name].bias.detach().double().clone()
        for name in layer_names
    }
    constant_kept: dict[str, set[int]] = {link.producer: set() for link in link_list}

    def remove_constant(link: Link, unit: int) -> bool:
        value = _constant(modules, link, biases[link.producer], unit)
        if value == 0.0:
            return True
        consumer = modules[link.consumer]
        exact = isinstance(consumer, nn.Linear) or all(p == 0 for p in _padding(consumer))
        if not exact or biases[link.consumer] is None:
            constant_kept[link.producer].add(unit)
            return False
        spread = _grouped(weights[link.consumer], weights[link.producer].shape[0], link.spatial)
        biases[link.consumer] += value * spread[:, unit].sum(1)
        return True

    alive = _fixpoint(weights, link_list, remove_constant)
    by_producer = {link.producer: link for link in link_list}
    by_consumer = {link.consumer: link for link in link_list}
    with torch.no_grad():
        for name in layer_names:
            old = modules[name]
            rows = alive[name] if name in by_producer else torch.ones(weights[name].shape[0], dtype=torch.bool)
            weight = weights[name][rows]
            source = by_consumer.get(name)
            if source is not None:
                keep = alive[source.producer]
                if weight.dim() > 2:
                    weight = weight[:, keep]
                else:
                    weight = weight.reshape(weight.shape[0], keep.numel(), source.spatial)[:, keep].flatten(1)
            bias = None if biases[name] is None else biases[name][rows]
            model.set_submodule(name, _layer_like(old, weight.to(old.weight.dtype), bias, old.weight.dtype))
        for link in link_list:
            for post in link.post:
                if post != RELU and isinstance(modules[post], (nn.BatchNorm1d, nn.BatchNorm2d)):
                    model.set_submodule(post, _norm_subset(modules[post], alive[link.producer]))
    notes = [
        "inputs and output classes are never cut (the compacted model takes the same inputs and gives the same outputs)"
    ]
    if isinstance(model, ResNet):
        notes.append(
            "ResNet: only each block's inner channels (conv1 -> bn1 -> conv2) are cut; the residual stream (stem, "
            "each block's conv2 and shortcut, the classifier's inputs) keeps its width, as the sums need equal shapes"
        )
    if any(constant_kept.values()):
        notes.append(
            "units with no incoming weight but a non-zero constant output that feed a zero-padded convolution are "
            "kept: the padding makes their contribution position-dependent, so it cannot be folded into a bias"
        )
    kept = {name: units.nonzero().flatten().tolist() for name, units in alive.items()}
    return Compacted(
        model=model.eval(),
        kept=kept,
        units={name: [units.numel(), int(units.sum())] for name, units in alive.items()},
        constant_kept={name: len(units & set(kept[name])) for name, units in constant_kept.items()},
        notes=notes,
    )


def _padding(conv: nn.Conv2d) -> tuple[int, ...]:
    if isinstance(conv.padding, str):
        return (0,) if conv.padding == "valid" else (1,)
    return tuple(conv.padding)


def _constant(modules: dict[str, nn.Module], link: Link, bias: Tensor | None, unit: int) -> float:
    """What unit `unit` of `link.producer` outputs after `link.post` when it has no incoming weight: post(bias),
    computed in float32 with the model's own modules' parameters, as the masked model computes it."""
    value = torch.zeros(1, dtype=torch.float32) if bias is None else bias[unit : unit + 1].float()
    for name in link.post:
        if name == RELU:
            value = value.relu()
            continue
        module = modules[name]
        if isinstance(module, nn.ReLU):
            value = value.relu()
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            index = slice(unit, unit + 1)
            weight = None if module.weight is None else module.weight[index]
            shift = None if module.bias is None else module.bias[index]
            value = F.batch_norm(
                value[None],
                module.running_mean[index],
                module.running_var[index],
                weight,
                shift,
                False,
                0.0,
                module.eps,
            )[0]
        # pooling, dropout (eval) and identity keep a constant image constant
    return float(value.detach()[0])


def _layer_like(old: nn.Module, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> nn.Module:
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        new = _conv_like(old, weight.shape[1], weight.shape[0], bias is not None)
    new.weight = nn.Parameter(weight.contiguous())
    if bias is not None:
        new.bias = nn.Parameter(bias.to(dtype).contiguous())
    return new


def _conv_like(old: nn.Conv2d, in_channels: int, out_channels: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=bias,
        padding_mode=old.padding_mode,
    )


def _norm_subset(old: nn.Module, keep: Tensor) -> nn.Module:
    new = type(old)(int(keep.sum()), eps=old.eps, momentum=old.momentum, affine=old.affine)
    with torch.no_grad():
        if old.affine:
            new.weight.copy_(old.weight[keep])
            new.bias.copy_(old.bias[keep])
        new.running_mean.copy_(old.running_mean[keep])
        new.running_var.copy_(old.running_var[keep])
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    return new


def resize_to(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """`model` (freshly built from the original config) with every linear, conv and batch-norm layer resized to
    the shapes in `state` (a compacted state dict), which is then loaded (strictly)."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or tuple(weight.shape) == tuple(module.weight.shape):
            continue
        has_bias = f"{name}.bias" in state
        if isinstance(module, nn.Linear):
            new: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
        elif isinstance(module, nn.Conv2d):
            new = _conv_like(module, weight.shape[1] * module.groups, weight.shape[0], has_bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = type(module)(weight.shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine)
        else:
            raise ConfigError(f"cannot rebuild {name}: a {type(module).__name__} of another shape")
        model.set_submodule(name, new)
    model.load_state_dict(state)
    return model


def card_entry(result: Compacted) -> dict[str, Any]:
    """The `compact` part of an export card (besides sizes and speed, which lth.export adds)."""
    return {
        "format": 1,
        "file": "compact.safetensors",
        "units": result.units,
        "kept_units": result.kept,
        "constant_units_kept": result.constant_kept,
        "removed_units": result.removed,
        "notes": result.notes,
    }
