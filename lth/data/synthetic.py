"""Synthetic classification data of any shape: one random prototype per class plus Gaussian noise.

Learnable (so accuracy means something in tests) yet generated in memory in milliseconds. The data is fixed
(seeded independently of the run seed), so runs with different seeds see the same examples.
"""

from __future__ import annotations

import math

import torch

from lth.config import DatasetConfig, SyntheticDatasetConfig
from lth.data import RawData, Source, register

_DATA_SEED = 1234
_SEPARATION = 3.0  # distance between class prototypes in units of the noise's standard deviation (about)


def read(cfg: DatasetConfig) -> RawData:
    assert isinstance(cfg, SyntheticDatasetConfig)
    generator = torch.Generator().manual_seed(_DATA_SEED)
    size = math.prod(cfg.input_shape)
    prototypes = torch.randn(cfg.num_classes, *cfg.input_shape, generator=generator) * _SEPARATION / math.sqrt(size)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(cfg.num_classes, (n,), generator=generator)
        noise = torch.randn(n, *cfg.input_shape, generator=generator)
        return prototypes[labels] + noise, labels

    train_x, train_y = draw(cfg.train_size)
    test_x, test_y = draw(cfg.test_size)
    return RawData(train_x, train_y, test_x, test_y, cfg.num_classes)


register("synthetic", Source(check=lambda cfg: None, read=read))
