"""Neuron against weight pruning at equal parameter counts: per round of each arm (a folder of seeds, e.g. made
with `train.replicates=3`), the mask density, the *effective* weights (the nonzero weights of the compacted
network: a weight reading a dead unit, or read by none, does nothing) and the accuracy; then each neuron-pruned
round beside the weight-pruned accuracy interpolated (linearly in log effective weights) at the same count.

    python scripts/structure_experiment.py WEIGHT_RUNS NEURON_RUNS

Prints Markdown tables. The arms of the measured comparison (Fashion-MNIST LeNet-300-100, 3 seeds, short rounds:
2 epochs on a 10,000-example subset), each about 10-13 minutes on 2 shared CPU cores:

    for s in weight neuron; do lth run prune.structure=$s prune.rate=0.3 prune.rounds=5 train.epochs=2 \
        dataset.subset=10000 dataset.val_size=2000 train.replicates=3 hydra.run.dir=runs/$s; done
    python scripts/compact_speed_table.py runs/neuron/seed_0 --threads 1 --trials 3 --repeats 30
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from pathlib import Path

import torch

from lth import compact, models
from lth.checkpoint import RUN_FILE, load_tensors, read_run_record, round_dir
from lth.models import prunable_weights
from lth.report import Run, load_runs
from lth.structured import from_container


def effective_weights(run: Run, round_index: int) -> int:
    """Nonzero weights of the compacted network of the round's mask (every survivor set to 1, biases 0: a unit
    without inputs then outputs 0 and goes)."""
    cfg = from_container(read_run_record(run.path)["config"], run.path / RUN_FILE)
    masks = load_tensors(round_dir(run.path, round_index) / "mask.safetensors")
    model = models.build(cfg.model, (1, 28, 28), 10)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for name, weight in prunable_weights(model).items():
            weight.copy_(masks[name].float())
    small = compact.compact(model, masks).model
    return sum(int(weight.count_nonzero()) for weight in prunable_weights(small).values())


def arm(path: Path) -> list[dict]:
    """Per round over the arm's seeds: density, effective weights, early-stop test accuracy and train - test gap."""
    runs = [run for run in load_runs([path]) if run.rows]
    rounds = min(len(run.rows) for run in runs)
    out = []
    for index in range(rounds):
        rows = [run.rows[index] for run in runs]
        accuracy = [row["early_stop_test_accuracy"] for row in rows]
        gaps = [row["train_accuracy"] - row["test_accuracy"] for row in rows if row.get("train_accuracy") is not None]
        out.append(
            {
                "round": index,
                "n": len(rows),
                "density": statistics.fmean(row["density"] for row in rows),
                "effective": statistics.fmean(effective_weights(run, index) for run in runs),
                "accuracy": statistics.fmean(accuracy),
                "std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
                "gap": statistics.fmean(gaps) if gaps else math.nan,
            }
        )
    return out


def interpolate(points: list[dict], effective: float) -> float | None:
    """The accuracy of `points` at `effective` weights, linear in log(weights); None outside their range."""
    ordered = sorted(points, key=lambda p: p["effective"])
    for low, high in itertools.pairwise(ordered):
        if low["effective"] <= effective <= high["effective"]:
            span = math.log(high["effective"]) - math.log(low["effective"])
            t = (math.log(effective) - math.log(low["effective"])) / span if span else 0.0
            return low["accuracy"] + t * (high["accuracy"] - low["accuracy"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weight", type=Path)
    parser.add_argument("neuron", type=Path)
    args = parser.parse_args()
    arms = {"weight": arm(args.weight), "neuron": arm(args.neuron)}
    for name, points in arms.items():
        print(f"\n{name} pruning ({points[0]['n']} seeds)\n")
        print("| round | mask density | effective weights | acc at early stop (mean ± std) | train − test (points) |")
        print("|---|---|---|---|---|")
        for p in points:
            print(
                f"| {p['round']} | {p['density']:.1%} | {p['effective']:,.0f} | "
                f"{p['accuracy']:.2%} ± {p['std']:.2%} | {100 * p['gap']:.1f} |"
            )
    print("\nat equal effective weights (weight pruning interpolated at each neuron round's count)\n")
    print("| effective weights | neuron pruning | weight pruning | neuron − weight (points) |")
    print("|---|---|---|---|")
    for p in arms["neuron"]:
        other = interpolate(arms["weight"], p["effective"])
        if other is not None:
            print(
                f"| {p['effective']:,.0f} | {p['accuracy']:.2%} | {other:.2%} | {100 * (p['accuracy'] - other):+.2f} |"
            )


if __name__ == "__main__":
    main()
