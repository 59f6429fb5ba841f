"""Any class-per-folder image tree in ImageNet's layout (torchvision's ImageFolder convention), held in memory.

    <dataset.root>/train/<class>/<image>.{png,jpg,jpeg,bmp,gif,webp,ppm,tif,tiff}
    <dataset.root>/val/<class>/...        (or test/)

Classes are the sorted names of the class folders, which must be the same under train/ and val/, so label k means
the same class in both splits. Every image is decoded with Pillow, converted to RGB, resized so its shorter side
is `dataset.image_size` and centre-cropped to a square (the usual ImageNet evaluation transform), then kept as
uint8 (N, 3, S, S). Everything is decoded once, up front: fine for Tiny-ImageNet-sized trees at small sizes
(100k images at 64x64 is 1.2 GB); streaming full ImageNet from disk is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lth.data.files import FileSource
from lth.data.registry import RawData
from lth.dataset_schemas import ImageFolderDatasetConfig
from lth.errors import ConfigError
from lth.schema import DatasetConfig

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
_TEST_DIRS = ("val", "test")


def class_dirs(split: Path) -> dict[str, Path]:
    """Class name -> folder, for the visible subfolders of one split."""
    return {d.name: d for d in sorted(split.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def load_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): shorter side resized to `size`, then the centre square."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 1/2..1/8 first (much faster)
            image = image.convert("RGB")
            scale = size / min(image.size)
            width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
            left, top = (width - size) // 2, (height - size) // 2
            return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path} is not a readable image ({reason}); fix or remove it") from None


@dataclass(frozen=True)
class ImageFolderSource(FileSource):
    def files_in(self, folder: Path) -> dict[str, Path] | None:
        test = next((folder / name for name in _TEST_DIRS if (folder / name).is_dir()), None)
        return {"train": folder / "train", "test": test} if (folder / "train").is_dir() and test else None

    def decode(self, files: dict[str, Path], cfg: DatasetConfig) -> RawData:
        assert isinstance(cfg, ImageFolderDatasetConfig)
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
        train_x, train_y = self._split(files["train"], classes, cfg.image_size, train=True)
        test_x, test_y = self._split(files["test"], classes, cfg.image_size, train=False)
        origin = {f"{split}_{part}": str(files[split]) for split in ("train", "test") for part in "xy"}
        return RawData(train_x, train_y, test_x, test_y, num_classes=len(classes), origin=origin)

    def _split(self, folder: Path, classes: list[str], size: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
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
        x = np.empty((len(paths), size, size, 3), dtype=np.uint8)  # filled in place: no list of arrays to stack
        for i, path in enumerate(paths):
            x[i] = load_image(path, size)
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)


ImageFolderSource(
    "imagefolder", ("imagefolder",), "image tree (train/<class>/*.png|jpg and val/<class>/ or test/<class>/)", None
).register()
