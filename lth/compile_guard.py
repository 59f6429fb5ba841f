"""`train.compile=true`: torch.compile with a way back, so a missing compiler never costs a run."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn


class GuardedCompile:
    """`torch.compile(model)` that falls back to the eager model, once and with a warning, if compiling fails
    (no compiler toolchain, an unsupported operator): `train.compile=true` never costs a run."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.compiled: Callable[[Tensor], Tensor] | None = torch.compile(model)
        self.proven = False

    def __call__(self, x: Tensor) -> Tensor:
        if self.compiled is None:
            return self.model(x)
        try:
            output = self.compiled(x)
        except Exception as error:
            if self.proven:  # it compiled and ran before: this is a real error in the model, not the compiler
                raise
            warnings.warn(
                f"train.compile: torch.compile failed ({type(error).__name__}); training eagerly", stacklevel=2
            )
            self.compiled = None
            return self.model(x)
        self.proven = True
        return output
