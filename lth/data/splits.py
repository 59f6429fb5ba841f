"""What `lth.data.load` returns: a Dataset of train, validation and test Splits on the training device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lth.data.registry import Augment
from lth.tasks import CLASSIFICATION


@dataclass(frozen=True)
class Split:
    """Examples on the training device: normalised floats when they fit in lth.data.FLOAT_CACHE_BYTES, otherwise as
    decoded (uint8 images stay uint8, a quarter of the memory) and normalised batch by batch by `inputs`."""

    images: Tensor  # shape (N, *input_shape)
    y: Tensor  # int64 labels, shape (N,)
    # training-set statistics (per channel for images), broadcastable to one example; None: `images` are ready
    mean: Tensor | None = None
    std: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def inputs(self, index: Tensor | slice) -> Tensor:
        """The normalised float inputs of the examples at `index`."""
        if self.mean is None or self.std is None:
            return self.images[index]
        return (self.images[index].float() - self.mean) / self.std

    @property
    def x(self) -> Tensor:
        """Every example normalised (a float copy of the whole split: for analysis and tests, not training)."""
        return self.inputs(slice(None))


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split | None  # None when dataset.val_size=0
    test: Split
    num_classes: int
    augment: Augment | None = None  # applied by the trainer to each training batch (on its device); None: nothing
    # the training-set statistics every split was normalised with (per channel for images), in the units the
    # source stores (0-255 for uint8 images), and that storage type: what an exported ticket needs for raw inputs
    input_mean: Tensor | None = None
    input_std: Tensor | None = None
    stored_dtype: torch.dtype | None = None
    task: str = CLASSIFICATION  # lth.tasks: classification (labels) | language_model (windows of tokens)
    vocab: Any = None  # language models: the lth.data.text.Vocab the tokens were encoded with

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])
