"""The model registry: `@register("name")` on a builder (lth/models/*.py) makes it `model.name=name`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lth.schema import ModelConfig
from lth.tasks import CLASSIFICATION

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
_BUILDERS: dict[str, Builder] = {}
_TAKE_WIDTH: set[str] = set()  # models whose first-stage channel count `model.width` sets
_TASKS: dict[str, str] = {}  # the task each model is built for (lth.tasks)


def register(name: str, *, takes_width: bool = False, task: str = CLASSIFICATION) -> Callable[[Builder], Builder]:
    """Add a builder under `model.name=<name>`; `takes_width`: it reads `model.width` (others refuse it); `task`:
    what it is built for (a language model's builder gets the window shape (T,) and the vocabulary size)."""

    def add(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        _TASKS[name] = task
        if takes_width:
            _TAKE_WIDTH.add(name)
        return builder

    return add


def names() -> list[str]:
    """lth's own models (`model.source=lth`)."""
    return sorted(_BUILDERS)


def task_of(cfg: ModelConfig) -> str:
    """The task a model config builds for (torchvision's constructors classify)."""
    return _TASKS.get(cfg.name, CLASSIFICATION) if cfg.source == "lth" else CLASSIFICATION


def names_for(task: str) -> list[str]:
    """lth's models built for `task`."""
    return sorted(name for name, built_for in _TASKS.items() if built_for == task)


def width_names() -> list[str]:
    """lth's models that take `model.width`."""
    return sorted(_TAKE_WIDTH)
