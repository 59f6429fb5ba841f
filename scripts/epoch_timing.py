"""What the data-path benchmarks (bench_data.py, bench_imagefolder.py) share: draining a DataLoader onto the
device as a training loop would, interleaved timing of epochs, and the facts of the machine for the JSON."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

import torch
import torchvision


def finish(device: torch.device) -> None:
    """Wait for the device's queued copies, so an epoch's time includes them."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def drain(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> tuple[int, torch.Tensor]:
    """Move every batch of `loader` to `device` (non-blocking, as pinned memory allows); the examples seen and the
    last batch of inputs (for a shape check)."""
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        seen += len(y)
    finish(device)
    return seen, x


def images_per_second(variants: dict[str, Callable[[], int]], images: int, repeats: int) -> dict[str, float]:
    """Each variant's epoch `repeats` times, interleaved so machine noise hits every variant alike; images/s of
    the median epoch. Every epoch must see all `images`."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, epoch in variants.items():
            started = time.perf_counter()
            assert epoch() == images
            seconds[name].append(time.perf_counter() - started)
    return {name: images / statistics.median(times) for name, times in seconds.items()}


def machine(device: torch.device) -> dict[str, object]:
    return {
        "device": str(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
    }
