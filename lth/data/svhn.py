"""SVHN cropped digits (Netzer et al. 2011) from the distribution's MATLAB files train_32x32.mat, test_32x32.mat.

http://ufldl.stanford.edu/housenumbers/: MATLAB v5 files holding `X`, uint8 of shape (32, 32, 3, N) (row, column,
channel, image), and `y`, shape (N, 1), labels 1..10 where 10 is the digit 0; lth maps 10 to label 0 as
torchvision does, so label k is digit k. The 531,131 "extra" examples (extra_32x32.mat) are not used, as in most
papers' small-budget baselines. Files may lie flat in a folder, in `svhn/`, or where torchvision downloads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.data.augment import random_crop
from lth.data.files import FileSource
from lth.data.registry import RawData
from lth.errors import ConfigError
from lth.schema import DatasetConfig

_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels 0..9 from one SVHN .mat file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as error:  # scipy raises ValueError, OSError, TypeError, MatReadError, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path} is not a readable MATLAB v5 file ({reason}); download it again") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        found = "nothing" if x is None else f"{x.dtype} {x.shape}"
        raise ConfigError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), found {found}")
    if y is None or y.size != x.shape[3]:
        raise ConfigError(
            f"{path}: 'y' must hold one label per image ({x.shape[3]}), found {0 if y is None else y.size}"
        )
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.array_equal(y, np.round(y))):
        raise ConfigError(f"{path}: 'y' must hold whole-number labels 1..10, found {y.dtype} values that are not")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and not (labels.min() >= 1 and labels.max() <= 10):
        raise ConfigError(f"{path}: labels must lie in 1..10 (10 is the digit 0), found {labels.min()}..{labels.max()}")
    labels[labels == 10] = 0
    # (H, W, C, N) -> (N, C, H, W); the copy makes it contiguous once, here, rather than in every batch.
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(labels)


@dataclass(frozen=True)
class SvhnDataset(FileSource):
    def files_in(self, folder: Path) -> dict[str, Path] | None:
        found = {key: folder / name for key, name in _FILES.items()}
        return found if all(path.is_file() for path in found.values()) else None

    def decode(self, files: dict[str, Path], cfg: DatasetConfig) -> RawData:
        train_x, train_y = read_mat(files["train"])
        test_x, test_y = read_mat(files["test"])
        # Crops but no flips: digits are not mirror-symmetric (a flipped 2 or 7 is not a digit).
        origin = {f"{split}_{part}": str(files[split]) for split in ("train", "test") for part in "xy"}
        return RawData(train_x, train_y, test_x, test_y, num_classes=10, augment=random_crop, origin=origin)


SvhnDataset(
    "svhn",
    ("svhn", "SVHN"),
    "MATLAB files (train_32x32.mat, test_32x32.mat)",
    "SVHN",
    download_calls=({"split": "train"}, {"split": "test"}),
).register()
