"""Model registry, and which tensors of a model are prunable.

A builder takes the model config and the dataset's input shape and class count and returns an initialised
nn.Module. Prunable tensors are the weights of linear and convolutional layers (never biases or norm layers);
the output layer is the last of them, pruned at its own rate.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lth.config import ModelConfig

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
_BUILDERS: dict[str, Builder] = {}
_TAKE_WIDTH: set[str] = set()  # models whose first-stage channel count `model.width` sets
_PRUNABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def register(name: str, *, takes_width: bool = False) -> Callable[[Builder], Builder]:
    """Add a builder under `model.name=<name>`; `takes_width`: it reads `model.width` (others refuse it)."""

    def add(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        if takes_width:
            _TAKE_WIDTH.add(name)
        return builder

    return add


def names() -> list[str]:
    return sorted(_BUILDERS)


def width_names() -> list[str]:
    """lth's models that take `model.width`."""
    return sorted(_TAKE_WIDTH)


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _BUILDERS[cfg.name](cfg, input_shape, num_classes)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of linear and conv layers, by parameter name, in module order."""
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, _PRUNABLE_LAYERS)
    }


def output_layer(model: nn.Module) -> str:
    """The parameter name of the classifier's weight: the last prunable weight."""
    return list(prunable_weights(model))[-1]


from lth.models import conv, lenet, resnet, vgg  # noqa: E402  (models register themselves)

__all__ = [
    "build",
    "conv",
    "lenet",
    "names",
    "output_layer",
    "prunable_weights",
    "register",
    "resnet",
    "vgg",
    "width_names",
]
