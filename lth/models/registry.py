"""The model registry: `@register("name")` on a builder (lth/models/*.py) makes it `model.name=name`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lth.schema import ModelConfig

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
_BUILDERS: dict[str, Builder] = {}
_TAKE_WIDTH: set[str] = set()  # models whose first-stage channel count `model.width` sets


def register(name: str, *, takes_width: bool = False) -> Callable[[Builder], Builder]:
    """Add a builder under `model.name=<name>`; `takes_width`: it reads `model.width` (others refuse it)."""

    def add(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        if takes_width:
            _TAKE_WIDTH.add(name)
        return builder

    return add


def names() -> list[str]:
    """lth's own models (`model.source=lth`)."""
    return sorted(_BUILDERS)


def width_names() -> list[str]:
    """lth's models that take `model.width`."""
    return sorted(_TAKE_WIDTH)
