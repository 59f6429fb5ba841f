"""A careful hand-written IMP, the baseline `scripts/bench.py` times `lth run` against (`imp_over_handwritten`).

It does the work `lth run prune.rounds=2 train.epochs=2` does, and nothing else: LeNet-300-100 on Fashion-MNIST
(5,000 training images held out for validation), Adam (fused) at 1.2e-3, batch 60, 2 epochs a round, evaluation
every 200 steps on the validation and test images, 20% of each hidden layer's and 10% of the output layer's
surviving weights pruned by magnitude after each round, survivors rewound to θ0, weights and masks saved per round.

    python scripts/handwritten_imp.py OUT_DIR [--rounds 2] [--epochs 2] [--data /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4"))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(folder: Path, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    def pair(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx(next(folder.glob(f"{prefix}-images-idx3-ubyte*")))
        labels = read_idx(next(folder.glob(f"{prefix}-labels-idx1-ubyte*")))
        return torch.from_numpy(images.copy()).float().flatten(1), torch.from_numpy(labels.copy()).long()

    (x, y), (test_x, test_y) = pair("train"), pair("t10k")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    val, train = order[:5000], order[5000:]
    mean, std = x[train].mean(), x[train].std()
    norm = lambda images: (images - mean) / std  # noqa: E731
    return {"train": (norm(x[train]), y[train]), "val": (norm(x[val]), y[val]), "test": (norm(test_x), test_y)}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = torch.cat([model(chunk) for chunk in x.split(2000)])
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = load(args.data, seed=0)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [model[0], model[2], model[4]]
    masks = [torch.ones_like(layer.weight) for layer in layers]
    rates = [0.2, 0.2, 0.1]
    x, y = splits["train"]
    for round_index in range(args.rounds + 1):
        model.load_state_dict(init)
        with torch.no_grad():
            for layer, mask in zip(layers, masks, strict=True):
                layer.weight.mul_(mask)
        optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3, fused=True)
        generator = torch.Generator().manual_seed(round_index)
        step, best = 0, (float("inf"), 0, 0.0)
        for _ in range(args.epochs):
            for batch in torch.randperm(len(y), generator=generator).split(60):
                loss = F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for layer, mask in zip(layers, masks, strict=True):
                        layer.weight.mul_(mask)
                step += 1
                if step % 200 == 0:
                    val_loss, _ = evaluate(model, *splits["val"])
                    _, test_accuracy = evaluate(model, *splits["test"])
                    best = min(best, (val_loss, step, test_accuracy))
        folder = args.out / f"round_{round_index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "final.safetensors")
        save_file({f"mask{i}": m for i, m in enumerate(masks)}, folder / "mask.safetensors")
        print(f"round {round_index}: early-stop step {best[1]}, test accuracy there {best[2]:.2%}")
        for index, (layer, rate) in enumerate(zip(layers, rates, strict=True)):  # prune the smallest survivors
            scores = layer.weight.detach().abs().flatten()[masks[index].flatten().bool()]
            count = round(rate * len(scores))
            threshold = scores.kthvalue(count).values
            masks[index] = masks[index] * (layer.weight.detach().abs() > threshold).float()


if __name__ == "__main__":
    main()
