"""What `lth.data.load` returns: a Dataset of train, validation and test splits, each a source of batches
(`Examples`): held on the training device (`Split`) or streamed from disk (lth.data.stream.StreamedSplit)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from lth.data.registry import Augment
from lth.tasks import CLASSIFICATION

Index = Tensor | slice  # positions of examples in a split


def rows(t: Tensor, index: Index) -> Tensor:
    """`t[index]`. Integer positions are copied with `index_select`, a whole row at a time: on the CPU twice as
    fast as advanced indexing for a batch of 60 images (0.15 against 0.30 ms), paid at every training step."""
    if isinstance(index, Tensor) and index.dtype in (torch.int64, torch.int32) and index.device == t.device:
        return torch.index_select(t, 0, index)
    return t[index]


class Examples(Protocol):
    """The examples of one split as the trainer reads them: labels on the device, inputs normalised."""

    y: Tensor  # int64 labels on the training device, shape (N,) (or (N, T) for windows of tokens)

    def __len__(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def inputs(self, index: Index) -> Tensor:
        """The normalised float inputs of the examples at `index` (a few at a time when streamed)."""
        ...

    def batches(self, indices: Iterable[Index]) -> Iterator[tuple[Tensor, Tensor]]:
        """The normalised inputs and the labels of each batch of positions in `indices`, in order: how training
        and evaluation read a split."""
        ...

    def select(self, index: Tensor) -> Examples:
        """The examples at `index`, as a split of their own (read as evaluations read)."""
        ...


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

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def inputs(self, index: Index) -> Tensor:
        """The normalised float inputs of the examples at `index`."""
        if self.mean is None or self.std is None:
            return rows(self.images, index)
        return (rows(self.images, index).float() - self.mean) / self.std

    def batches(self, indices: Iterable[Index]) -> Iterator[tuple[Tensor, Tensor]]:
        for index in indices:
            yield self.inputs(index), rows(self.y, index)

    def select(self, index: Tensor) -> Split:
        return replace(self, images=rows(self.images, index), y=rows(self.y, index))

    @property
    def x(self) -> Tensor:
        """Every example normalised (a float copy of the whole split: for analysis and tests, not training)."""
        return self.inputs(slice(None))


@dataclass(frozen=True)
class Dataset:
    train: Examples
    val: Examples | None  # None when dataset.val_size=0
    test: Examples
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
        return self.train.input_shape
