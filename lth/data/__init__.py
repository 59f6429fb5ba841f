"""Dataset registry: each source reads its real on-disk format; `load` splits, normalises and places it.

A source turns a DatasetConfig into raw tensors (train and test images with labels). Everything common
(the seed-fixed validation hold-out, normalisation with training statistics, moving to the device once so
batches never leave it) happens here, the same for every dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lth.config import DatasetConfig
from lth.errors import ConfigError


@dataclass(frozen=True)
class Split:
    x: Tensor  # float images, normalised, shape (N, *input_shape)
    y: Tensor  # int64 labels, shape (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class RawData:
    """What a source reads: uint8 or float images (N, C, H, W) or (N, D), int labels."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split | None  # None when dataset.val_size=0
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class Source:
    check: Callable[[DatasetConfig], None]  # raise ConfigError if the data cannot be found; cheap
    read: Callable[[DatasetConfig], RawData]


_SOURCES: dict[str, Source] = {}


def register(name: str, source: Source) -> None:
    _SOURCES[name] = source


def names() -> list[str]:
    return sorted(_SOURCES)


def check(cfg: DatasetConfig) -> None:
    """Fail early, before a run directory exists, when the data is not where the config says."""
    _SOURCES[cfg.name].check(cfg)


def load(cfg: DatasetConfig, seed: int, device: torch.device) -> Dataset:
    raw = _SOURCES[cfg.name].read(cfg)
    if cfg.val_size >= len(raw.train_y):
        raise ConfigError(
            f"dataset.val_size={cfg.val_size} is not allowed; it must be smaller than the "
            f"{len(raw.train_y)} training examples of {cfg.name}"
        )
    order = torch.randperm(len(raw.train_y), generator=torch.Generator().manual_seed(seed))
    train_idx, val_idx = order[cfg.val_size :], order[: cfg.val_size]
    train_x = raw.train_x[train_idx].float()
    mean, std = train_x.mean(), train_x.std()

    def split(x: Tensor, y: Tensor) -> Split:
        return Split(((x.float() - mean) / std).to(device), y.long().to(device))

    return Dataset(
        train=split(train_x, raw.train_y[train_idx]),
        val=split(raw.train_x[val_idx], raw.train_y[val_idx]) if cfg.val_size else None,
        test=split(raw.test_x, raw.test_y),
        num_classes=raw.num_classes,
    )


from lth.data import idx, synthetic  # noqa: E402  (sources register themselves)

__all__ = ["Dataset", "RawData", "Source", "Split", "check", "idx", "load", "names", "register", "synthetic"]
