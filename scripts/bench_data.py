"""Benchmark one epoch of CIFAR-shaped training batches: lth's data path versus torchvision's Dataset + DataLoader.

Both read the same files: `--images` random uint8 images written as real CIFAR-10 python pickle batches into a
temporary folder. Decoding the files happens once, before timing, on both sides (lth's reader and torchvision's
CIFAR10 constructor both turn the pickles into one array). Timed is one epoch at batch 128:

- lth: uint8 images (N, 3, 32, 32) already on the device; per batch: a seeded shuffle's indices, conversion to
  float, normalisation by channel, `random_crop_flip` (pad 4, random crop, flip p=0.5) on the device.
- torchvision: `datasets.CIFAR10` with RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, and
  a shuffling `DataLoader` with num_workers=0 and 2 (worker start-up counts: it happens every epoch).

Repetitions are interleaved so machine noise hits every variant alike; the median counts.

    python scripts/bench_data.py [--images 50000] [--repeats 3] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchvision
from epoch_timing import drain, finish, images_per_second, machine
from torch.utils.data import DataLoader
from torchvision import transforms

from lth.config import DatasetConfig
from lth.data.augment import random_crop_flip
from lth.data.cifar import CIFAR10, write_batches

BATCH = 128


class UncheckedCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's reader without the MD5 checks that pin the official files (ours are random)."""

    train_list: ClassVar = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list: ClassVar = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta: ClassVar = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def lth_epoch(folder: Path, device: torch.device, seed: int) -> Callable[[], int]:
    raw = CIFAR10.read(DatasetConfig(name="cifar10", root=str(folder)))
    x, y = raw.train_x.to(device), raw.train_y.to(device)
    mean = x.float().mean((0, 2, 3), keepdim=True)
    std = x.float().std((0, 2, 3), keepdim=True)

    def epoch() -> int:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(y), generator=generator).to(device)
        seen = 0
        for batch in order.split(BATCH):
            images = random_crop_flip((x[batch].float() - mean) / std, generator)
            labels = y[batch]
            seen += len(labels)
        finish(device)
        assert images.shape[1:] == (3, 32, 32)
        return seen

    return epoch


def torchvision_epoch(folder: Path, device: torch.device, seed: int, workers: int) -> Callable[[], int]:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the usual CIFAR-10 statistics
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = UncheckedCIFAR10(str(folder.parent), train=True, transform=transform)

    def epoch() -> int:
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, generator=generator)
        return drain(loader, device)[0]

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000, help="training images (CIFAR-10 has 50,000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to compare")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "cifar-10-batches-py"
        rng = np.random.default_rng(0)
        train = rng.integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, args.images)
        write_batches(folder, "cifar10", train, (train[0][:100], train[1][:100]))
        variants = {"lth": lth_epoch(folder, device, seed=0)}
        for workers in args.workers:
            variants[f"torchvision workers={workers}"] = torchvision_epoch(folder, device, 0, workers)
        rates = images_per_second(variants, args.images, args.repeats)
    result = {
        **machine(device),
        "images": args.images,
        "batch_size": BATCH,
        "repeats": args.repeats,
        "images_per_second": {name: round(rate) for name, rate in rates.items()},
        "lth_over": {name: round(rates["lth"] / rate, 2) for name, rate in rates.items() if name != "lth"},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"device {device}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads, {args.images} images, batch {BATCH}, median of {args.repeats}"
    )
    print(f"{'path':<26} {'images/s':>10} {'lth over it':>12}")
    for name, rate in rates.items():
        print(f"{name:<26} {rate:10.0f} {rates['lth'] / rate:11.1f}x")


if __name__ == "__main__":
    main()
