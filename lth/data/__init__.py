"""Dataset registry: each source reads its real on-disk format; `load` splits, normalises and places it.

A source turns a DatasetConfig into raw tensors (train and test images with labels). Everything common
(the seed-fixed validation hold-out, the stratified `dataset.subset`, normalisation with training statistics,
moving to the device once so batches never leave it) happens here, the same for every dataset. A source may name
an augmentation for training batches (`Dataset.augment`, see lth/data/augment.py); the trainer applies it.
An image tree too large for memory is streamed from disk instead (lth/data/stream.py), with the same splits,
statistics and batches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lth.data.holdout import channel_statistics, hold_out, stratified_subset, training_examples
from lth.data.registry import _SOURCES, Augment, RawData, Source, names, register, task_of
from lth.data.splits import Dataset, Examples, Split
from lth.errors import ConfigError
from lth.schema import DatasetConfig

FLOAT_CACHE_BYTES = 2**31  # datasets up to 2 GiB as float32 are normalised once (MNIST: 0.2 GiB, CIFAR: 0.7 GiB)


_PARTS = {
    "train_x": "training images",
    "train_y": "training labels",
    "test_x": "test images",
    "test_y": "test labels",
}


def check_raw(raw: RawData, name: str) -> None:
    """Refuse data whose content cannot train a classifier, naming the file it came from (`raw.origin`, else the
    dataset `name`): the checks every source shares, so no reader can hand over what the CIFAR reader would refuse.

    Images: one example per row, (N, ...) with at least one feature, integer or finite float values, the same
    shape for training and test examples; labels: integers of shape (N,), one per image, in 0..num_classes-1;
    at least two classes and at least one training and one test example.
    """

    def where(part: str) -> str:
        return raw.origin.get(part) or f"{name} {_PARTS[part]}"

    if raw.num_classes < 2:
        raise ConfigError(
            f"{where('train_y')}: a classification dataset needs at least 2 classes, found {raw.num_classes}"
        )
    for split in ("train", "test"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        if x.dim() < 2 or math.prod(x.shape[1:]) == 0:
            raise ConfigError(
                f"{where(f'{split}_x')}: images must be (examples, ...) with at least one value each, "
                f"found shape {tuple(x.shape)}"
            )
        if x.dtype == torch.bool or x.is_complex():
            raise ConfigError(f"{where(f'{split}_x')}: images must hold integer or float values, found {x.dtype}")
        if y.dim() != 1:
            raise ConfigError(
                f"{where(f'{split}_y')}: labels must be one integer per image, shape (N,), found shape {tuple(y.shape)}"
            )
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ConfigError(f"{where(f'{split}_y')}: labels must be integers, found {y.dtype}")
        if len(y) != len(x):
            raise ConfigError(
                f"{where(f'{split}_y')}: {len(y)} labels for the {len(x)} images of {where(f'{split}_x')}; "
                "every image needs exactly one label"
            )
        if len(y) == 0:
            raise ConfigError(f"{where(f'{split}_x')}: the {_PARTS[f'{split}_x']} are empty; at least one is needed")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= raw.num_classes:
            raise ConfigError(
                f"{where(f'{split}_y')}: labels must lie in 0..{raw.num_classes - 1} ({raw.num_classes} classes), "
                f"found {low}..{high}"
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ConfigError(f"{where(f'{split}_x')}: {bad} values are NaN or infinite; images must be finite")
    if raw.test_x.shape[1:] != raw.train_x.shape[1:]:
        raise ConfigError(
            f"{where('test_x')}: test images of shape {tuple(raw.test_x.shape[1:])}, but the training images "
            f"({where('train_x')}) are {tuple(raw.train_x.shape[1:])}; both splits must have one shape"
        )


def check(cfg: DatasetConfig) -> None:
    """Fail early, before a run directory exists, when the data is not where the config says."""
    _SOURCES[cfg.name].check(cfg)


def available_examples(cfg: DatasetConfig) -> int:
    """The size of the data's training split, read and checked (a sweep's limits are checked with it up front);
    a source that can count its examples without reading them (an image tree) counts them."""
    source = _SOURCES[cfg.name]
    if source.count is not None:
        return source.count(cfg)
    assert source.read is not None
    raw = source.read(cfg)
    check_raw(raw, cfg.name)
    return len(raw.train_y)


def load(cfg: DatasetConfig, seed: int, device: torch.device) -> Dataset:
    source = _SOURCES[cfg.name]
    if source.load is not None and (dataset := source.load(cfg, seed, device)) is not None:
        return dataset  # built by the source itself (text corpora; an image tree streamed from disk)
    assert source.read is not None
    raw = source.read(cfg)
    check_raw(raw, cfg.name)
    train_idx, val_idx = hold_out(raw.train_y, cfg, seed)
    if raw.pixel_sums is not None:  # exact, and the same as a streamed copy of the data computes
        mean, std = channel_statistics(raw.pixel_sums[train_idx], raw.train_x[0, 0].numel())
    else:  # per channel for images (N, C, H, W), as the CIFAR recipes normalise; one value for flat or 1-channel data
        train_x = raw.train_x[train_idx].float()
        per_channel = (0, 2, 3) if train_x.dim() == 4 else tuple(range(train_x.dim()))
        mean, std = train_x.mean(per_channel, keepdim=True)[0], train_x.std(per_channel, keepdim=True)[0]

    as_float = (len(raw.train_y) + len(raw.test_y)) * raw.train_x[0].numel() * 4
    normalise_once = as_float <= FLOAT_CACHE_BYTES  # then no step pays for normalising its batch

    def split(x: Tensor, y: Tensor) -> Split:
        if normalise_once:
            return Split(((x.float() - mean) / std).to(device), y.long().to(device))
        return Split(x.to(device), y.long().to(device), mean.to(device), std.to(device))

    return Dataset(
        train=split(raw.train_x[train_idx], raw.train_y[train_idx]),
        val=split(raw.train_x[val_idx], raw.train_y[val_idx]) if cfg.val_size else None,
        test=split(raw.test_x, raw.test_y),
        num_classes=raw.num_classes,
        augment=raw.augment,
        input_mean=mean,
        input_std=std,
        stored_dtype=raw.train_x.dtype,
    )


from lth.data import cifar, idx, imagefolder, svhn, synthetic, text  # noqa: E402  (sources register themselves)

__all__ = [
    "Augment",
    "Dataset",
    "Examples",
    "RawData",
    "Source",
    "Split",
    "check",
    "check_raw",
    "cifar",
    "hold_out",
    "idx",
    "imagefolder",
    "load",
    "names",
    "register",
    "stratified_subset",
    "svhn",
    "synthetic",
    "task_of",
    "text",
    "training_examples",
]
