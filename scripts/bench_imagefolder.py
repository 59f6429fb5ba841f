"""Benchmark one epoch of a streamed image tree: lth's streaming path versus torchvision's ImageFolder + DataLoader.

Both read the same generated tree: `--images` JPEGs of 96-128 pixels a side (smooth random pictures with noise,
so they compress like photographs), in `--classes` class folders under a temporary `train/` (and a small `val/`).
Both resize the shorter side to `--size`, take the centre square and normalise per channel, in batches of
`--batch` drawn in a seeded random order, with the same worker processes (persistent, created before timing: a
warm-up epoch starts them) and pinned memory on CUDA:

- lth: `dataset=imagefolder dataset.stream=true` (lth/data/stream.py) read as the trainer reads it
  (`dataset.train.batches` over the trainer's batches): workers decode into uint8 batches (Pillow, with JPEG
  draft-mode downscaling), the batch goes to the device as uint8 and is normalised there.
- torchvision: `datasets.ImageFolder` with Resize, CenterCrop, ToTensor, Normalize, and a shuffling
  `DataLoader`; the float batch goes to the device.

Also reported: lth's start-up pass over the training images (their exact statistics), once per run.
Repetitions are interleaved so machine noise hits every variant alike; the median counts.

    python scripts/bench_imagefolder.py [--images 2000] [--workers 0 2] [--repeats 5] [--threads T] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from epoch_timing import drain, finish, images_per_second, machine
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from lth import data
from lth.config import ImageFolderDatasetConfig
from lth.train import steps_per_epoch


def write_tree(root: Path, images: int, classes: int, seed: int = 0) -> None:
    """`images` training JPEGs (and a tenth as many validation ones) of 96-128 pixels a side."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", max(classes, images // 10))):
        for i in range(count):
            folder = root / split / f"class_{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            width, height = (int(side) for side in rng.integers(96, 129, 2))
            coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height))
            noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def lth_epoch(root: Path, size: int, batch: int, workers: int, device: torch.device) -> tuple[Callable[[], int], float]:
    """One epoch of lth's streaming path, and the seconds its start-up pass (the statistics) took."""
    cfg = ImageFolderDatasetConfig(
        name="imagefolder", root=str(root), image_size=size, val_size=0, stream="true", workers=workers
    )
    started = time.perf_counter()
    train = data.load(cfg, seed=0, device=device).train
    load_seconds = time.perf_counter() - started
    epochs = iter(range(10**9))

    def epoch() -> int:
        generator = torch.Generator().manual_seed(next(epochs))
        order = torch.randperm(len(train), generator=generator).to(device)
        seen = 0
        for x, _ in train.batches(order.split(batch)):
            seen += len(x)
        assert x.shape[1:] == (3, size, size) and x.dtype == torch.float32
        finish(device)
        return seen

    return epoch, load_seconds


def torchvision_epoch(root: Path, size: int, batch: int, workers: int, device: torch.device) -> Callable[[], int]:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's
    transform = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    dataset = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )

    def epoch() -> int:
        seen, x = drain(loader, device)
        assert x.shape[1:] == (3, size, size)
        return seen

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="training JPEGs in the generated tree")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="dataset.image_size (and torchvision's Resize)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to compare")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; the median counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads of the main process (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        write_tree(root, args.images, args.classes)
        variants: dict[str, Callable[[], int]] = {}
        start_up: dict[str, float] = {}
        for workers in args.workers:
            lth, start_up[f"lth workers={workers}"] = lth_epoch(root, args.size, args.batch, workers, device)
            variants[f"lth workers={workers}"] = lth
            variants[f"torchvision workers={workers}"] = torchvision_epoch(root, args.size, args.batch, workers, device)
        for epoch in variants.values():  # starts the persistent workers
            assert epoch() == args.images
        rates = images_per_second(variants, args.images, args.repeats)
    ratios = {f"workers={w}": rates[f"lth workers={w}"] / rates[f"torchvision workers={w}"] for w in args.workers}
    result = {
        **machine(device),
        "images": args.images,
        "size": args.size,
        "batch_size": args.batch,
        "steps_per_epoch": steps_per_epoch(args.images, args.batch),
        "repeats": args.repeats,
        "images_per_second": {name: round(rate) for name, rate in rates.items()},
        "lth_over_torchvision": {name: round(ratio, 2) for name, ratio in ratios.items()},
        "lth_statistics_pass_seconds": {name: round(value, 2) for name, value in start_up.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"device {device}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads, {args.images} JPEGs of 96-128 px to {args.size}x{args.size}, "
        f"batch {args.batch}, median of {args.repeats}"
    )
    print(f"{'path':<26} {'images/s':>10}")
    for name, rate in rates.items():
        print(f"{name:<26} {rate:10.0f}")
    for name, ratio in ratios.items():
        print(f"lth over torchvision, {name}: {ratio:.2f}x (lth's statistics pass: {start_up['lth ' + name]:.2f} s)")


if __name__ == "__main__":
    main()
