"""Which examples a run trains and validates on, and the training statistics it normalises with: the same for data
held in memory (`lth.data.load`) and for an image tree streamed from disk (`lth.data.stream`), so both give the
same splits and the same normalised inputs."""

from __future__ import annotations

import torch
from torch import Tensor

from lth.schema import DatasetConfig, refuse
from lth.seeds import SUBSET, derive_seed


def training_examples(cfg: DatasetConfig, available: int) -> int:
    """How many examples a run of `cfg` trains on, of the `available` ones of the training split, once the
    validation split is held out and `dataset.subset` drawn; sizes the data cannot give are refused."""
    if cfg.val_size >= available:
        refuse("dataset.val_size", cfg.val_size, f"smaller than the {available} training examples of {cfg.name}")
    left = available - cfg.val_size
    if cfg.subset is not None and cfg.subset > left:
        held_out = f" (dataset.val_size={cfg.val_size} held out)" if cfg.val_size else ""
        refuse("dataset.subset", cfg.subset, f"at most the {left} training examples of {cfg.name}{held_out}")
    return left if cfg.subset is None else cfg.subset


def hold_out(labels: Tensor, cfg: DatasetConfig, seed: int) -> tuple[Tensor, Tensor]:
    """Positions of the training and the validation examples among the training split's `labels`: the validation
    split is a seed-fixed `dataset.val_size` of them, the training examples the rest, cut to a stratified,
    seed-fixed `dataset.subset` when it is set."""
    training_examples(cfg, len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train_idx, val_idx = order[cfg.val_size :], order[: cfg.val_size]
    if cfg.subset is not None:
        generator = torch.Generator().manual_seed(derive_seed(seed, SUBSET))
        train_idx = train_idx[stratified_subset(labels[train_idx], cfg.subset, generator)]
    return train_idx, val_idx


def stratified_subset(labels: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Sorted positions of `size` of `labels`, each class's share proportional to its count, drawn with `generator`.

    Shares are rounded by largest remainder (ties to the lower class), so they add up to `size` exactly and a
    class keeps at least its rounded-down share; which examples of a class are kept is a seeded permutation.
    """
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * size / len(labels)
    quota = exact.floor().long()
    leftover = size - int(quota.sum())
    quota[torch.sort(exact - quota, descending=True, stable=True).indices[:leftover]] += 1
    kept = []
    for label, count, share in zip(classes.tolist(), counts.tolist(), quota.tolist(), strict=True):
        members = (labels == label).nonzero().squeeze(1)
        kept.append(members[torch.randperm(count, generator=generator)[:share]])
    return torch.cat(kept).sort().values


def channel_statistics(pixel_sums: Tensor, pixels_per_image: int) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (unbiased) standard deviation, shaped (C, 1, 1), of the images whose integer pixel
    sums and sums of squares `pixel_sums` (N, 2, C) holds: exact rational arithmetic, rounded once, so the result
    does not depend on how the images were summed (all at once in memory, or batch by batch as they stream)."""
    totals = pixel_sums.sum(0).tolist()  # int64: exact (an image of 512x512 sums to at most 2^36 per channel)
    count = len(pixel_sums) * pixels_per_image
    means, stds = [], []
    for total, squares in zip(*totals, strict=True):
        means.append(total / count)
        stds.append(((count * squares - total * total) / (count * (count - 1))) ** 0.5)  # Python ints: no overflow
    shape = (len(means), 1, 1)
    return torch.tensor(means).view(shape), torch.tensor(stds).view(shape)
