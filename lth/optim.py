"""The optimisers of `train.optimizer` (fused kernels) and the learning rate they are stepped with.

torch wraps `step` (in `_use_grad_for_differentiable`: no_grad and a dynamo graph break) and four more `Optimizer`
methods (`add_param_group`, called by every constructor, `zero_grad`, `state_dict`, `load_state_dict`, in
`torch._disable_dynamo`) in guards that import `torch._dynamo` on their first call: 2.5-3.5 s of a run's
start-up on a CPU, for guards that only matter while dynamo traces. An eager run (`train.compile=false`) never
traces, so it steps optimisers that call the methods underneath the guards (the step under no_grad, as the guard
runs it with `differentiable=False`); the arithmetic is torch's own. A compiled run keeps torch's classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from lth.schema import TrainConfig

_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _unwrapped(method: Any) -> Any:
    """The function a guard wraps (functools.wraps keeps it as `__wrapped__`; an unguarded method as it is)."""
    return getattr(method, "__wrapped__", method)


def _unguarded(optimizer: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`optimizer` with its dynamo-guarded methods replaced by the functions they wrap."""
    methods = {name: _unwrapped(getattr(optimizer, name)) for name in _GUARDED}
    methods["step"] = torch.no_grad()(_unwrapped(optimizer.step))
    return type(f"Eager{optimizer.__name__}", (optimizer,), methods)


_CLASSES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
_EAGER = {name: _unguarded(cls) for name, cls in _CLASSES.items()}


def make_optimizer(parameters: Iterable[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Fused kernels: one pass over all parameters per step; on the CPU Adam's step costs ~3x less than foreach."""
    cls = (_CLASSES if cfg.compile else _EAGER)[cfg.optimizer]
    if cfg.optimizer == "sgd":
        return cls(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
    # adamw decouples the decay, w -= lr * decay * w: a pruned (zero) weight stays zero
    return cls(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    if lr != optimizer.param_groups[0]["lr"]:
        for group in optimizer.param_groups:
            group["lr"] = lr
