"""Synthetic classification data of any shape: one random prototype per class plus Gaussian noise.

Learnable (so accuracy means something in tests) yet generated in memory in milliseconds. The data is fixed
(seeded independently of the run seed), so runs with different seeds see the same examples.

`dataset.like=cifar10` (or another name in LIKE) takes a real dataset's input shape and class count, overriding
`dataset.input_shape` and `dataset.num_classes`: a stand-in for smoke-testing a model/dataset pairing without
the files. imagefolder is not in LIKE: its shape (dataset.image_size) and class count depend on the tree.
"""

from __future__ import annotations

import math

import torch

from lth.data.registry import RawData, Source, register
from lth.dataset_schemas import SyntheticDatasetConfig
from lth.schema import DatasetConfig

_DATA_SEED = 1234
# The shape of one example and the class count of each real dataset lth reads (see their readers' docstrings).
LIKE: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "svhn": ((3, 32, 32), 10),
}
_SEPARATION = 3.0  # distance between class prototypes in units of the noise's standard deviation (about)


def read(cfg: DatasetConfig) -> RawData:
    assert isinstance(cfg, SyntheticDatasetConfig)
    shape, num_classes = LIKE[cfg.like] if cfg.like is not None else (tuple(cfg.input_shape), cfg.num_classes)
    generator = torch.Generator().manual_seed(_DATA_SEED)
    prototypes = torch.randn(num_classes, *shape, generator=generator) * _SEPARATION / math.sqrt(math.prod(shape))

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(num_classes, (n,), generator=generator)
        noise = torch.randn(n, *shape, generator=generator)
        return prototypes[labels] + noise, labels

    train_x, train_y = draw(cfg.train_size)
    test_x, test_y = draw(cfg.test_size)
    return RawData(train_x, train_y, test_x, test_y, num_classes)


register("synthetic", Source(check=lambda cfg: None, read=read))  # dataset.like is checked by config.validate
