"""lth: an experiment runner for the Lottery Ticket Hypothesis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__version__ = "0.1.0"


def load_ticket(
    path: Path | str, device: str | torch.device = "cpu", inputs: str = "normalised", compact: bool | None = None
) -> nn.Module:
    """The model of a ticket folder written by `lth export`, weights loaded, in eval mode (lth.export).

    `inputs="unit"` for images in [0, 1] (torchvision's ToTensor), `"raw"` for pixels as the dataset's files
    store them; by default inputs normalised as `lth.data.load` gives them. The compacted model of
    `lth export --compact` unless `compact=False`."""
    from lth.export import load_ticket as load  # torch is imported on use, so `lth --help` stays fast

    return load(path, device, inputs, compact)
