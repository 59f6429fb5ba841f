"""Benchmark lth's training against a plain PyTorch loop on this machine; prints a table (or JSON with --json).

Figures are ratios against a baseline measured in the same process on the same data, so they mean the same
on any machine:

- `masked_over_dense`: seconds per epoch of lth's Trainer on a pruned network (80% of the weights masked, as
  in a late IMP round) over a hand-written dense loop (data already in tensors, same batch size, same
  optimiser: lth's fused Adam/SGD). Repetitions are interleaved and the median is kept; each repetition times
  `--steps` steps (a whole epoch for LeNet) and reports them per epoch of the dataset the model is trained on.
- `replicates_speedup`: one epoch of N LeNet-300-100 seeds (default 8) trained one after another over the same
  seeds trained together in one batch (`train.replicates=N`, lth.replicates).
- `imp_total_s`: wall time of `lth run` (LeNet-300-100, Fashion-MNIST, batch 60, Adam, 3 rounds x 2 epochs)
  from start to exit, start-up, evaluation and checkpoints included; `imp_over_handwritten`: its ratio to
  scripts/handwritten_imp.py, a careful hand-written IMP doing the same work (same evaluations, saved rounds).

    python scripts/bench.py [--models lenet_300_100,resnet20,vgg16] [--steps N] [--repeats 3] [--json]
    python scripts/bench.py --skip-imp        # no Fashion-MNIST needed
    python scripts/bench.py --models lenet_300_100 --replicates 8 --skip-imp
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lth import data
from lth.config import ModelConfig, PruneConfig, SyntheticDatasetConfig, TrainConfig
from lth.criteria import Scoring
from lth.models import build, output_layer
from lth.optim import make_optimizer
from lth.prune import apply_masks, dense_masks, plan_round
from lth.replicates import ReplicateBatch
from lth.train import Trainer

# model: (dataset it is trained on: shape, training examples per epoch), recipe, steps timed per repetition
SETTINGS = {
    "lenet_300_100": ("fashion_mnist", 55_000, TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60), 917),
    "resnet20": ("cifar10", 45_000, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128), 40),
    "vgg16": ("cifar10", 45_000, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128), 10),
}


def synthetic(like: str, examples: int, device: torch.device) -> data.Dataset:
    cfg = SyntheticDatasetConfig(name="synthetic", like=like, train_size=examples, test_size=64, val_size=0)
    return data.load(cfg, 0, device)


def pruned_model(name: str, dataset: data.Dataset, device: torch.device, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """The model at 20% density (magnitude-pruned at init, layerwise), on `device`."""
    torch.manual_seed(seed)
    model = build(ModelConfig(name=name), dataset.input_shape, dataset.num_classes).to(device)
    masks = dense_masks(model)
    groups = plan_round(masks, output_layer(model), PruneConfig(rate=0.8, output_rate=0.8), 1)
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    scoring = Scoring(PruneConfig(), model, masks, weights, weights, weights, dataset, torch.Generator())
    masks = scoring.prune(groups)
    apply_masks(model, masks)
    return model, masks


def lth_epoch_seconds(name: str, cfg: TrainConfig, dataset: data.Dataset, per_epoch: int, device) -> float:
    model, masks = pruned_model(name, dataset, device)
    trainer = Trainer(model, masks, dataset, cfg, seed=0, round_index=1)
    trainer.run()  # one pass: optimiser state, allocator and (first time) kernel caches warm
    trainer = Trainer(model, masks, dataset, cfg, seed=0, round_index=1)
    _sync(device)
    started = time.perf_counter()
    trainer.run()
    _sync(device)
    return (time.perf_counter() - started) / trainer.total_steps * per_epoch


def plain_epoch_seconds(name: str, cfg: TrainConfig, dataset: data.Dataset, per_epoch: int, device) -> float:
    """The loop a researcher would write by hand: no masks, no evaluation, no bookkeeping."""
    torch.manual_seed(0)
    model = build(ModelConfig(name=name), dataset.input_shape, dataset.num_classes).to(device)
    optimizer = make_optimizer(model.parameters(), cfg)
    x, y = dataset.train.x, dataset.train.y

    def epoch() -> int:
        steps = 0
        for batch in torch.randperm(len(y), device=device).split(cfg.batch_size):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        return steps

    epoch()
    _sync(device)
    started = time.perf_counter()
    steps = epoch()
    _sync(device)
    return (time.perf_counter() - started) / steps * per_epoch


def masked_over_dense(models: list[str], steps: int | None, repeats: int, device: torch.device) -> dict[str, dict]:
    results = {}
    for name in models:
        like, per_epoch, cfg, default_steps = SETTINGS[name]
        timed = steps or default_steps
        cfg = TrainConfig(**{**cfg.__dict__, "epochs": 1, "eval_every": 0})
        dataset = synthetic(like, timed * cfg.batch_size, device)
        per_epoch = -(-per_epoch // cfg.batch_size)  # steps in one epoch of the real dataset
        lth_times, plain_times = [], []
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
            plain_times.append(plain_epoch_seconds(name, cfg, dataset, per_epoch, device))
            lth_times.append(lth_epoch_seconds(name, cfg, dataset, per_epoch, device))
        lth_s, plain_s = statistics.median(lth_times), statistics.median(plain_times)
        results[name] = {"lth_epoch_s": lth_s, "plain_epoch_s": plain_s, "masked_over_dense": lth_s / plain_s}
    return results


def imp_over_handwritten(repeats: int, device: torch.device) -> dict[str, float]:
    """`lth run` (3 rounds x 2 epochs of Fashion-MNIST LeNet-300-100) against scripts/handwritten_imp.py doing
    the same work, both timed as whole processes (start-up included), interleaved, medians."""
    handwritten = Path(__file__).resolve().parent / "handwritten_imp.py"
    lth_times, handwritten_times = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            lth_times.append(_process_seconds([
                sys.executable, "-m", "lth", "run", "prune.rounds=2", "train.epochs=2", "ui.progress=false",
                f"device={device.type}", f"hydra.run.dir={folder}/run",
            ]))  # fmt: skip
            handwritten_times.append(_process_seconds([sys.executable, str(handwritten), f"{folder}/hand"]))
    lth_s, handwritten_s = statistics.median(lth_times), statistics.median(handwritten_times)
    return {"imp_total_s": lth_s, "handwritten_imp_s": handwritten_s, "imp_over_handwritten": lth_s / handwritten_s}


def _process_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def replicates_speedup(name: str, count: int, repeats: int, device: torch.device) -> dict[str, float]:
    """One epoch of `count` seeds trained one after another (lth's Trainer) over the same seeds trained
    together (`train.replicates`, lth.replicates.ReplicateBatch); interleaved repetitions, medians."""
    like, per_epoch, cfg, _ = SETTINGS[name]
    cfg = TrainConfig(**{**cfg.__dict__, "epochs": 1, "eval_every": 0})
    dataset = synthetic(like, per_epoch, device)

    def trainers() -> list[Trainer]:
        pruned = [pruned_model(name, dataset, device, seed) for seed in range(count)]
        return [
            Trainer(model, masks, dataset, cfg, seed=seed, round_index=1) for seed, (model, masks) in enumerate(pruned)
        ]

    def timed(solo: list[Trainer] | None = None, together: ReplicateBatch | None = None) -> float:
        _sync(device)
        started = time.perf_counter()
        if together is not None:
            together.run()
        for trainer in solo or []:
            trainer.run()
        _sync(device)
        return time.perf_counter() - started

    ReplicateBatch(trainers()).run()  # warm-up: kernels, allocator
    sequential, batched = [], []
    for _ in range(repeats):
        sequential.append(timed(solo=trainers()))
        batched.append(timed(together=ReplicateBatch(trainers())))
    sequential_s, batched_s = statistics.median(sequential), statistics.median(batched)
    return {
        "model": name,
        "replicates": count,
        "sequential_s": sequential_s,
        "batched_s": batched_s,
        "replicates_speedup": sequential_s / batched_s,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet_300_100,resnet20,vgg16")
    parser.add_argument(
        "--steps",
        type=int,
        help="steps timed per repetition (default: a whole epoch for LeNet, 40 for ResNet-20, 10 for VGG-16)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-imp", action="store_true", help="skip the end-to-end `lth run` (needs Fashion-MNIST)")
    parser.add_argument("--replicates", type=int, default=8, help="seeds trained together for replicates_speedup")
    parser.add_argument("--skip-replicates", action="store_true")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    report = {
        "device": machine,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "masked_over_dense": masked_over_dense(args.models.split(","), args.steps, args.repeats, device),
    }
    if not args.skip_replicates:
        report["replicates"] = replicates_speedup("lenet_300_100", args.replicates, args.repeats, device)
    if not args.skip_imp:
        report |= imp_over_handwritten(args.repeats, device)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{machine}, {report['threads']} threads, torch {report['torch']}")
    print(f"{'model':<15}{'lth s/epoch':>13}{'plain s/epoch':>15}{'masked/dense':>14}")
    for name, row in report["masked_over_dense"].items():
        print(f"{name:<15}{row['lth_epoch_s']:>13.2f}{row['plain_epoch_s']:>15.2f}{row['masked_over_dense']:>14.3f}")
    if "replicates" in report:
        row = report["replicates"]
        print(
            f"{row['model']}, {row['replicates']} seeds x 1 epoch: one after another {row['sequential_s']:.1f} s, "
            f"together (train.replicates) {row['batched_s']:.1f} s; speed-up {row['replicates_speedup']:.2f}"
        )
    if "imp_total_s" in report:
        print(
            f"lth run (3 rounds x 2 epochs): {report['imp_total_s']:.1f} s; hand-written IMP, same work: "
            f"{report['handwritten_imp_s']:.1f} s; ratio {report['imp_over_handwritten']:.2f}"
        )


if __name__ == "__main__":
    main()
