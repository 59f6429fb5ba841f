"""Benchmark one masked LeNet-300-100 training step (batch 60, Frankle & Carbin's recipe) on this machine.

Prints milliseconds per step for each variant and its ratio to the baseline measured in the same run:
the baseline is PyTorch's default Adam (foreach) without gradient masking.

    python scripts/bench_train_step.py [--steps 400] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lth.config import ModelConfig
from lth.models import build, prunable_weights


def time_steps(optimizer_kind: str, masked: bool, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10).to(device)
    fused = optimizer_kind == "fused"
    optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3, fused=fused, foreach=None if fused else True)
    masks = [(w, (torch.rand_like(w) > 0.5).to(w.dtype)) for w in prunable_weights(model).values()]
    if masked:  # as in a pruning round: pruned weights start at zero
        with torch.no_grad():
            for weight, mask in masks:
                weight.mul_(mask)
    x = torch.randn(steps, 60, 1, 28, 28, device=device)
    y = torch.randint(10, (steps, 60), device=device)

    def step(i: int) -> None:
        loss = F.cross_entropy(model(x[i]), y[i])
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if masked:
            for weight, mask in masks:
                weight.grad.mul_(mask)
        optimizer.step()

    for i in range(20):  # warm-up
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the fastest counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = [("foreach", False), ("foreach", True), ("fused", True)]
    results = {v: float("inf") for v in variants}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for variant in variants:
            results[variant] = min(results[variant], time_steps(*variant, args.steps, device))
    baseline = results[variants[0]]
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.steps} steps, best of {args.repeats}"
    )
    print(f"{'optimizer':<10} {'masked':<7} {'ms/step':>8} {'vs baseline':>12}")
    for (kind, masked), ms in results.items():
        print(f"{kind:<10} {masked!s:<7} {ms:8.3f} {baseline / ms:11.2f}x")


if __name__ == "__main__":
    main()
