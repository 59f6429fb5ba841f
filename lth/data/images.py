"""One image file decoded the way every image tree is read (lth.data.imagefolder into memory, lth.data.stream from
disk), its exact pixel statistics, and a tree's files: shared so both paths give the same pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lth.errors import ConfigError


@dataclass(frozen=True)
class Tree:
    """The image files of both splits in label order (class by class, files sorted), with their labels."""

    classes: list[str]
    train: list[Path]
    train_y: torch.Tensor
    test: list[Path]
    test_y: torch.Tensor

    def decoded_bytes(self, size: int) -> int:
        return (len(self.train) + len(self.test)) * 3 * size * size


def pixel_sums(image: np.ndarray) -> np.ndarray:
    """int64 (2, 3): the per-channel sum and sum of squares of one uint8 (S, S, 3) image (exact statistics)."""
    flat = image.reshape(-1, 3).astype(np.int64)
    return np.stack([flat.sum(0), (flat * flat).sum(0)])


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
