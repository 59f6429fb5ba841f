"""The wall time of Frankle & Carbin's LeNet-300-100 protocol on this machine, projected from measured rounds.

    python scripts/protocol_budget.py [--seeds 5] [--epochs 1] [--rounds 16] [--json]

The protocol (`+experiment=frankle2019_lenet`): MNIST, Adam at 1.2e-3, batch 60, 50,000 iterations a round (55
epochs of 917 steps), evaluation on the 5,000 validation and 10,000 test images every 100 iterations, 16 rounds,
five seeds. Masked training costs what dense training costs, so every round costs what round 0 does: this script
times `--epochs` epochs of round 0 of the preset, once for one seed alone and once for all seeds trained together
(`train.replicates`), reads the training seconds each run records (`train_seconds`: the loop, its evaluations and
its per-step state, not start-up), and scales them to 55 epochs x `--rounds` rounds. Needs MNIST
(scripts/ensure_data.sh mnist).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS_PER_ROUND = 55  # 50,000 iterations at 917 steps an epoch


def round0(folder: Path, seeds: int, epochs: int) -> tuple[float, float]:
    """(training seconds of round 0, process seconds) of the preset with `seeds` replicates and `epochs` epochs."""
    run = folder / f"replicates{seeds}"
    preset = ["+experiment=frankle2019_lenet", "prune.rounds=0", f"train.epochs={epochs}", "ui.progress=false"]
    command = [sys.executable, "-m", "lth", "run", *preset, f"train.replicates={seeds}", f"hydra.run.dir={run}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    process = time.perf_counter() - started
    metrics = run / ("seed_0" if seeds > 1 else ".") / "round_00" / "metrics.json"
    return json.loads(metrics.read_text())["train_seconds"], process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of round 0 timed (the protocol has 55)")
    parser.add_argument("--rounds", type=int, default=16, help="rounds of the protocol projected")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scale = EPOCHS_PER_ROUND / args.epochs * args.rounds
    with tempfile.TemporaryDirectory() as folder:
        alone, alone_process = round0(Path(folder), 1, args.epochs)
        together, together_process = round0(Path(folder), args.seeds, args.epochs)
    result = {
        "cores": os.cpu_count(),
        "threads": os.environ.get("LTH_THREADS", "torch's default"),
        "epochs_timed": args.epochs,
        "one_seed_train_s": alone,
        "one_seed_process_s": alone_process,
        f"{args.seeds}_seeds_together_train_s": together,
        f"{args.seeds}_seeds_together_process_s": together_process,
        "projected_one_after_another_h": alone * scale * args.seeds / 3600,
        "projected_together_h": together * scale / 3600,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:34} {value:.2f}" if isinstance(value, float) else f"{key:34} {value}")


if __name__ == "__main__":
    main()
