"""An image tree streamed from disk (`dataset.stream`, lth.data.imagefolder): the second way a split gives batches.

Nothing is held but the file names and the labels. A pass over a split (an epoch's remaining batches, an
evaluation) hands its batches of positions to a `torch.utils.data.DataLoader` whose `dataset.workers` processes
decode them (`lth.data.images.load_image`: the pixels the in-memory path holds) while the device trains; they
persist from pass to pass, and their batches come in pinned memory when the device is CUDA. The batches are the
trainer's own (the order drawn from the seed, round and epoch; a resumed epoch asks only for the batches it has
not trained on, so the skipped images are never decoded), and each is normalised on the device as a batch held in
memory is, so a streamed run trains on the same inputs in the same order as the same tree decoded into memory.

Loading the tree decodes its training images once, in the workers, for the training statistics (exact integer
sums, `lth.data.holdout.channel_statistics`, so they equal the in-memory path's): a run, or a resumed run, starts
with that one pass. Validation and test images are first decoded at the first evaluation, so an unreadable one is
reported there (in one line, as in memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from lth.data.holdout import channel_statistics, hold_out
from lth.data.images import Tree, load_image, pixel_sums
from lth.data.splits import Dataset, Index
from lth.dataset_schemas import ImageFolderDatasetConfig
from lth.errors import ConfigError

MAX_DEFAULT_WORKERS = 8  # dataset.workers=null: one worker per CPU core this process may use, at most this many
SUMS_BATCH = 256  # images per batch of the statistics pass


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_DEFAULT_WORKERS, cores)


class _Decoder(TorchDataset):
    """The images at a batch of positions in `paths`: uint8 (B, 3, S, S), or with `sums` their pixel sums
    (B, 2, 3); an unreadable file comes back as its one-line message (a worker's exception would arrive with the
    worker's traceback)."""

    def __init__(self, paths: list[str], size: int, sums: bool = False) -> None:
        self.paths, self.size, self.sums = paths, size, sums

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: list[int]) -> Tensor | str:
        images = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        try:
            for i, row in enumerate(rows):
                images[i] = load_image(Path(self.paths[row]), self.size)
        except ConfigError as error:
            return str(error)
        if self.sums:
            return torch.from_numpy(np.stack([pixel_sums(image) for image in images]))
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


class _Batches(Sampler[list[int]]):
    """The batches of positions the next pass reads (a pass keeps the list it started with)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Reader:
    """One DataLoader over the tree's files; its worker processes start at the first pass and stay for the next."""

    def __init__(self, decoder: _Decoder, workers: int, pin_memory: bool) -> None:
        self.decoder, self.sampler = decoder, _Batches()
        self.loader = DataLoader(
            decoder,
            sampler=self.sampler,
            batch_size=None,  # the decoder reads a whole batch: no per-image collation
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
        )

    def read(self, batches: list[list[int]]) -> Iterator[Tensor]:
        """Each batch of positions decoded, in order (a few ahead, in the workers)."""
        self.sampler.batches = batches
        for item in self.loader:
            yield _checked(item)

    def decode(self, rows: list[int]) -> Tensor:
        """One batch decoded in this process (a few examples: a pruning criterion's, a mask update's batch)."""
        return _checked(self.decoder[rows])


def _checked(item: Tensor | str) -> Tensor:
    if isinstance(item, str):
        raise ConfigError(item)
    return item


@dataclass(frozen=True)
class StreamedSplit:
    """The examples of one split, at `rows` of the tree's files (lth.data.splits.Examples)."""

    reader: Reader  # what its passes read through: the training split its own, evaluated splits a shared one
    evaluation: Reader  # what a selection of its examples reads through
    rows: Tensor  # positions in the reader's files (CPU, int64)
    y: Tensor  # labels on the training device
    mean: Tensor  # training statistics (C, 1, 1) on the training device, in 0-255 units
    std: Tensor

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        size = self.reader.decoder.size
        return (3, size, size)

    def inputs(self, index: Index) -> Tensor:
        return self._normalised(self.reader.decode(self._rows(index)))

    def batches(self, indices: Iterable[Index]) -> Iterator[tuple[Tensor, Tensor]]:
        indices = list(indices)
        decoded = self.reader.read([self._rows(index) for index in indices])
        for images, index in zip(decoded, indices, strict=True):
            yield self._normalised(images), self.y[index]

    def select(self, index: Tensor) -> StreamedSplit:
        """A selection is evaluated (lth.train.training_sample), so it reads through the evaluation reader even when
        taken from the training split, whose reader may be in the middle of an epoch."""
        return replace(self, reader=self.evaluation, rows=self.rows[index.cpu()], y=self.y[index])

    def _rows(self, index: Index) -> list[int]:
        return self.rows[index.cpu() if isinstance(index, Tensor) else index].tolist()

    def _normalised(self, images: Tensor) -> Tensor:
        """As a batch held in memory is normalised (lth.data.splits.Split.inputs), on the training device."""
        return (images.to(self.y.device, non_blocking=True).float() - self.mean) / self.std


def load(tree: Tree, cfg: ImageFolderDatasetConfig, seed: int, device: torch.device) -> Dataset:
    """The tree's splits, streamed: the same examples, statistics and batches as `lth.data.load` in memory."""
    train_idx, val_idx = hold_out(tree.train_y, cfg, seed)
    size, paths = cfg.image_size, [str(path) for path in tree.train + tree.test]
    workers = default_workers() if cfg.workers is None else cfg.workers
    sums = torch.cat(list(Reader(_Decoder(paths, size, sums=True), workers, False).read(_chunks(train_idx))))
    mean, std = channel_statistics(sums, size * size)
    pin = device.type == "cuda"
    training, evaluation = (Reader(_Decoder(paths, size), workers, pin) for _ in range(2))

    def split(reader: Reader, rows: Tensor, y: Tensor) -> StreamedSplit:
        return StreamedSplit(reader, evaluation, rows, y.to(device), mean.to(device), std.to(device))

    return Dataset(
        train=split(training, train_idx, tree.train_y[train_idx]),
        val=split(evaluation, val_idx, tree.train_y[val_idx]) if cfg.val_size else None,
        test=split(evaluation, torch.arange(len(tree.train), len(paths)), tree.test_y),
        num_classes=len(tree.classes),
        input_mean=mean,
        input_std=std,
        stored_dtype=torch.uint8,
    )


def _chunks(rows: Tensor) -> list[list[int]]:
    return [chunk.tolist() for chunk in rows.split(SUMS_BATCH)]
