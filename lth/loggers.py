"""Metrics streams beside each round's metrics.json: `metrics.jsonl` always, TensorBoard with `logger=tensorboard`.

Both are written when a round is published and only from what was published, so they never show a number
that a finished round does not hold: `metrics.jsonl` is rewritten whole (atomically) from every round's
metrics.json, so a crash or a resume can neither duplicate nor drop lines; TensorBoard gets the new round's
scalars appended.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lth.checkpoint import atomic_write, read_json, round_dir
from lth.distributed import main_only

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_SUMMARY = ("density", "test_accuracy", "best_test_accuracy", "early_stop_step", "early_stop_test_accuracy")


@main_only  # under torchrun only rank 0 writes
def round_published(run_dir: Path, round_index: int, logger: str) -> None:
    rounds = _published(run_dir)
    lines = [json.dumps(line) for metrics in rounds for line in _lines(metrics)]
    atomic_write(run_dir / JSONL_FILE, ("\n".join(lines) + "\n").encode())
    if logger == "tensorboard":
        _tensorboard(run_dir, rounds[round_index])


def _published(run_dir: Path) -> list[dict[str, Any]]:
    rounds, index = [], 0
    while (path := round_dir(run_dir, index) / "metrics.json").is_file():
        rounds.append(read_json(path))
        index += 1
    return rounds


def _lines(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per evaluation of the round, then the round's summary (everything but the history)."""
    round_index, density = metrics["round"], metrics["density"]
    evaluations = [{"kind": "evaluation", "round": round_index, "density": density, **e} for e in metrics["history"]]
    summary = {"kind": "round", **{k: v for k, v in metrics.items() if k != "history"}}
    return [*evaluations, summary]


def _tensorboard(run_dir: Path, metrics: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package; imported only when asked

    round_index = metrics["round"]
    with SummaryWriter(str(run_dir / TENSORBOARD_DIR)) as writer:
        for evaluation in metrics["history"]:
            for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "lr"):
                if evaluation.get(key) is not None:
                    writer.add_scalar(f"round_{round_index:02d}/{key}", evaluation[key], evaluation["step"])
        for key in _SUMMARY:
            if metrics.get(key) is not None:
                writer.add_scalar(f"rounds/{key}", metrics[key], round_index)
