"""The dataset registry: `register(name, Source(check, read))` (lth/data/*.py) makes a reader `dataset=name`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lth.schema import DatasetConfig
from lth.tasks import CLASSIFICATION

# A training-batch augmentation: (normalised images (N, C, H, W), seeded generator) -> images of the same shape.
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class RawData:
    """What a source reads: uint8 or float images (N, C, H, W) or (N, D), int labels."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: Augment | None = None  # what the trainer applies to training batches; None: nothing
    # What each of train_x, train_y, test_x, test_y was read from (a file, a folder), for error messages.
    origin: Mapping[str, str] = field(default_factory=dict)
    # int64 (N, 2, C): each training image's per-channel pixel sum and sum of squares, from which `lth.data.load`
    # computes exact statistics (lth.data.holdout.channel_statistics); None: from the images, in float32
    pixel_sums: Tensor | None = None


@dataclass(frozen=True)
class Source:
    check: Callable[[DatasetConfig], None]  # raise ConfigError if the data cannot be found; cheap
    read: Callable[[DatasetConfig], RawData] | None  # labelled examples, split and normalised by lth.data.load
    task: str = CLASSIFICATION  # what a model learns from it (lth.tasks)
    # builds the Dataset itself instead of `read` (text corpora: contiguous splits, not held-out examples; an image
    # tree streamed from disk); (config, seed, device) -> Dataset, or None: `read` it into memory after all
    load: Callable[[DatasetConfig, int, torch.device], Any] | None = None  # a lth.data.splits.Dataset
    count: Callable[[DatasetConfig], int] | None = None  # the training split's size without reading it; None: read


_SOURCES: dict[str, Source] = {}


def register(name: str, source: Source) -> None:
    _SOURCES[name] = source


def names() -> list[str]:
    return sorted(_SOURCES)


def task_of(name: str) -> str:
    """The task of dataset `name` (lth.tasks): classification or language_model."""
    return _SOURCES[name].task
