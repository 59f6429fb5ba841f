"""MNIST-family datasets from the idx files that LeCun's and Zalando's distributions ship.

idx layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per dimension, then
the values in big-endian C order. Files may be gzipped. They may lie flat in a folder (Debian's
/usr/share/datasets/fashion-mnist) or in torchvision's `<root>/<Name>/raw/` layout.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.data.files import FileSource, first_file
from lth.data.registry import RawData
from lth.errors import ConfigError
from lth.schema import DatasetConfig

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_DIMS = 8  # far more than any idx dataset has (images 3, labels 1); NumPy itself stops at 64
_NDIM = {"train_x": 3, "train_y": 1, "test_x": 3, "test_y": 1}  # (images, rows, columns), (labels,)
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (plain or gzipped) into an array of its stored type and shape."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error}); check its permissions") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ConfigError(f"{path} is a damaged gzip file ({error}); download it again") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _DTYPES:
        raise ConfigError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if not 1 <= ndim <= _MAX_DIMS:
        raise ConfigError(
            f"{path}: its idx header claims {ndim} dimensions; idx image files have 3 (images, rows, columns), "
            "label files 1"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConfigError(f"{path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a huge claim cannot overflow into a small one
    if len(raw) - header != expected:
        raise ConfigError(f"{path} is truncated: header promises {expected} bytes of data, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IdxDataset(FileSource):
    num_classes: int = 10

    def files_in(self, folder: Path) -> dict[str, Path] | None:
        found = {key: first_file(folder, (stem, stem + ".gz")) for key, stem in _FILES.items()}
        return found if all(found.values()) else None  # type: ignore[return-value]

    def decode(self, files: dict[str, Path], cfg: DatasetConfig) -> RawData:
        arrays = {}
        for key, path in files.items():
            array = read_idx(path)
            if array.ndim != _NDIM[key]:
                what = "(images, rows, columns)" if _NDIM[key] == 3 else "(labels,)"
                raise ConfigError(
                    f"{path}: an idx {'image' if _NDIM[key] == 3 else 'label'} file must have {_NDIM[key]} "
                    f"dimension(s) {what}, found shape {array.shape}"
                )
            arrays[key] = torch.from_numpy(array)
        return RawData(
            train_x=arrays["train_x"].unsqueeze(1),
            train_y=arrays["train_y"],
            test_x=arrays["test_x"].unsqueeze(1),
            test_y=arrays["test_y"],
            num_classes=self.num_classes,
            origin={key: str(path) for key, path in files.items()},
        )


_DESCRIBED = f"idx files ({_FILES['train_x']}[.gz] and the other three)"
IdxDataset("mnist", ("mnist", "MNIST/raw"), _DESCRIBED, "MNIST").register()
IdxDataset("fashion_mnist", ("fashion-mnist", "FashionMNIST/raw"), _DESCRIBED, "FashionMNIST").register()
