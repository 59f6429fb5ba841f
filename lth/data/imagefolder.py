"""Any class-per-folder image tree in ImageNet's layout (torchvision's ImageFolder convention).

    <dataset.root>/train/<class>/<image>.{png,jpg,jpeg,bmp,gif,webp,ppm,tif,tiff}
    <dataset.root>/val/<class>/...        (or test/)

Classes are the sorted names of the class folders, which must be the same under train/ and val/, so label k means
the same class in both splits. Every image is decoded with Pillow, converted to RGB, resized so its shorter side
is `dataset.image_size` and centre-cropped to a square (the usual ImageNet evaluation transform), then kept as
uint8 (N, 3, S, S). A tree that fits in memory is decoded once, up front (100k images at 64x64 is 1.2 GB); a
larger one streams from disk (`dataset.stream`, lth/data/stream.py), decoded batch by batch in DataLoader workers,
with the same splits, statistics and batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lth.data import stream
from lth.data.files import FileSource
from lth.data.images import Tree, load_image, pixel_sums
from lth.data.registry import RawData, Source, register
from lth.data.splits import Dataset
from lth.dataset_schemas import ImageFolderDatasetConfig
from lth.errors import ConfigError
from lth.schema import DatasetConfig

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
_TEST_DIRS = ("val", "test")
# dataset.stream=auto streams a tree whose decoded images (N x 3 x S x S bytes) exceed this fraction of the memory
# available when the run starts: holding them takes about twice that (the tree and its training split's copy)
STREAM_ABOVE = 0.25


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux: MemAvailable; else the free pages)."""
    try:
        with open("/proc/meminfo") as info:
            return next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def streams(mode: str, decoded_bytes: int, available_bytes: int) -> bool:
    """Whether `dataset.stream` (true | false | auto) streams a tree of `decoded_bytes` from disk."""
    return mode == "true" or (mode == "auto" and decoded_bytes > STREAM_ABOVE * available_bytes)


def class_dirs(split: Path) -> dict[str, Path]:
    """Class name -> folder, for the visible subfolders of one split."""
    return {d.name: d for d in sorted(split.iterdir()) if d.is_dir() and not d.name.startswith(".")}


@dataclass(frozen=True)
class ImageFolderSource(FileSource):
    def files_in(self, folder: Path) -> dict[str, Path] | None:
        test = next((folder / name for name in _TEST_DIRS if (folder / name).is_dir()), None)
        return {"train": folder / "train", "test": test} if (folder / "train").is_dir() and test else None

    def tree(self, files: dict[str, Path]) -> Tree:
        """Every image file of both splits, labelled by class; class folders that differ are refused."""
        train, test = class_dirs(files["train"]), class_dirs(files["test"])
        if not train or train.keys() != test.keys():
            only_train, only_test = sorted(train.keys() - test.keys()), sorted(test.keys() - train.keys())
            raise ConfigError(
                f"{files['train']} and {files['test']} must hold the same class folders (at least one); "
                f"only in train: {', '.join(only_train) or 'none'}; only in {files['test'].name}: "
                f"{', '.join(only_test) or 'none'}"
            )
        if len(train) < 2:
            raise ConfigError(
                f"{files['train']} holds one class folder ({next(iter(train))}); a classifier needs at least 2"
            )
        classes = sorted(train)
        train_paths, train_y = self._list(files["train"], classes, train=True)
        test_paths, test_y = self._list(files["test"], classes, train=False)
        return Tree(classes, train_paths, train_y, test_paths, test_y)

    def decode(self, files: dict[str, Path], cfg: DatasetConfig) -> RawData:
        assert isinstance(cfg, ImageFolderDatasetConfig)
        tree = self.tree(files)
        (train_x, sums), (test_x, _) = (_decode(paths, cfg.image_size) for paths in (tree.train, tree.test))
        origin = {f"{split}_{part}": str(files[split]) for split in ("train", "test") for part in "xy"}
        return RawData(train_x, tree.train_y, test_x, tree.test_y, len(tree.classes), origin=origin, pixel_sums=sums)

    def streamed(self, cfg: DatasetConfig, seed: int, device: torch.device) -> Dataset | None:
        """The tree streamed from disk when `dataset.stream` says so (auto: when it is too large for memory);
        None: decode it into memory."""
        assert isinstance(cfg, ImageFolderDatasetConfig)
        if cfg.stream == "false":
            return None
        tree = self.tree(self.located(cfg))
        if not streams(cfg.stream, tree.decoded_bytes(cfg.image_size), available_memory()):
            return None
        return stream.load(tree, cfg, seed, device)

    def streams(self, cfg: ImageFolderDatasetConfig) -> bool:
        """Whether a run of `cfg` would stream its tree (False when there is no tree: `check` says so)."""
        if cfg.stream != "auto":
            return cfg.stream == "true"
        files = self.find(cfg)
        return files is not None and streams("auto", self.tree(files).decoded_bytes(cfg.image_size), available_memory())

    def count(self, cfg: DatasetConfig) -> int:
        return len(self.tree(self.located(cfg)).train)

    def register(self) -> None:
        register(self.name, Source(check=self.check, read=self.read, load=self.streamed, count=self.count))

    def _list(self, folder: Path, classes: list[str], train: bool) -> tuple[list[Path], torch.Tensor]:
        """Every image of a split, labelled by class; a training class folder without images is refused (nothing
        could learn that class), a test class folder may be empty."""
        paths, labels = [], []
        for label, name in enumerate(classes):
            images = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
            if not images and train:
                raise ConfigError(
                    f"{folder / name} holds no images ({', '.join(EXTENSIONS)}); every training class needs some"
                )
            paths += images
            labels += [label] * len(images)
        if not paths:
            raise ConfigError(f"{folder} holds no images ({', '.join(EXTENSIONS)}) in its class folders")
        return paths, torch.tensor(labels, dtype=torch.int64)


def _decode(paths: list[Path], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images as uint8 (N, 3, size, size) and their pixel sums (N, 2, 3)."""
    x = np.empty((len(paths), size, size, 3), dtype=np.uint8)  # filled in place: no list of arrays to stack
    sums = np.empty((len(paths), 2, 3), dtype=np.int64)
    for i, path in enumerate(paths):
        x[i] = load_image(path, size)
        sums[i] = pixel_sums(x[i])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(sums)


IMAGE_FOLDER = ImageFolderSource(
    "imagefolder", ("imagefolder",), "image tree (train/<class>/*.png|jpg and val/<class>/ or test/<class>/)", None
)
IMAGE_FOLDER.register()
