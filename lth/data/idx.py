"""MNIST-family datasets from the idx files that LeCun's and Zalando's distributions ship.

idx layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per dimension, then
the values in big-endian C order. Files may be gzipped. They may lie flat in a folder (Debian's
/usr/share/datasets/fashion-mnist) or in torchvision's `<root>/<Name>/raw/` layout.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.config import DatasetConfig
from lth.data import RawData, Source, register
from lth.errors import ConfigError

SYSTEM_DATA_DIR = Path("/usr/share/datasets")
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (plain or gzipped) into an array of its stored type and shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ConfigError(f"{path} is a damaged gzip file ({error}); download it again") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _DTYPES:
        raise ConfigError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ConfigError(f"{path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ConfigError(f"{path} is truncated: header promises {expected} bytes of data, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IdxDataset:
    name: str  # registry and config name, e.g. fashion_mnist
    system_dir: str  # Debian's folder under /usr/share/datasets
    torchvision_name: str  # torchvision's class and folder name
    num_classes: int = 10

    def candidate_dirs(self, cfg: DatasetConfig) -> list[Path]:
        """Every folder that may hold the four files, in search order."""
        if cfg.root is not None:
            bases = [Path(cfg.root).expanduser()]
        else:
            bases = [Path(p).expanduser() for p in [os.environ.get("LTH_DATA")] if p]
            bases.append(SYSTEM_DATA_DIR)
            if cfg.download:
                bases.append(download_root(cfg))
        dirs = []
        for base in bases:
            dirs += [base, base / self.system_dir, base / self.torchvision_name / "raw"]
        return list(dict.fromkeys(dirs))

    def find(self, cfg: DatasetConfig) -> dict[str, Path] | None:
        for folder in self.candidate_dirs(cfg):
            found = {key: _with_optional_gz(folder / stem) for key, stem in _FILES.items()}
            if all(found.values()):
                return found  # type: ignore[return-value]
        return None

    def check(self, cfg: DatasetConfig) -> None:
        if self.find(cfg) is None and not cfg.download:
            looked = ", ".join(str(d) for d in self.candidate_dirs(cfg))
            raise ConfigError(
                f"dataset.root: no {self.name} idx files ({_FILES['train_x']}[.gz] and the other three) in any "
                f"of: {looked}; set dataset.root to their folder, set $LTH_DATA, or add dataset.download=true"
            )

    def read(self, cfg: DatasetConfig) -> RawData:
        files = self.find(cfg)
        if files is None:
            self.check(cfg)
            self._download(cfg)
            files = self.find(cfg)
            assert files is not None, "torchvision's download left no idx files"
        arrays = {key: torch.from_numpy(read_idx(path)) for key, path in files.items()}
        return RawData(
            train_x=arrays["train_x"].unsqueeze(1),
            train_y=arrays["train_y"],
            test_x=arrays["test_x"].unsqueeze(1),
            test_y=arrays["test_y"],
            num_classes=self.num_classes,
        )

    def _download(self, cfg: DatasetConfig) -> None:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, self.torchvision_name)
        try:
            for train in (True, False):
                dataset_class(root=str(download_root(cfg)), train=train, download=True)
        except (OSError, RuntimeError) as error:
            raise ConfigError(f"dataset.download: torchvision could not download {self.name}: {error}") from None


def download_root(cfg: DatasetConfig) -> Path:
    """Where `dataset.download=true` puts the files: dataset.root, else $LTH_DATA, else ./data."""
    return Path(cfg.root or os.environ.get("LTH_DATA") or "data").expanduser()


def _with_optional_gz(stem: Path) -> Path | None:
    for candidate in (stem, stem.with_name(stem.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


for _dataset in (
    IdxDataset("mnist", system_dir="mnist", torchvision_name="MNIST"),
    IdxDataset("fashion_mnist", system_dir="fashion-mnist", torchvision_name="FashionMNIST"),
):
    register(_dataset.name, Source(check=_dataset.check, read=_dataset.read))
