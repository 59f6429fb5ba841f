"""Metrics streams beside each round's metrics.json: `metrics.jsonl` always, a tracker with `logger=tensorboard`,
`mlflow` or `wandb` (lth.trackers).

`metrics.jsonl` is written when a round is published and only from what was published, so it never shows a
number that a finished round does not hold: it is rewritten whole (atomically) from every round's metrics.json,
so a crash or a resume can neither duplicate nor drop lines. Each evaluation line holds the validation and test
loss and accuracy and those on a fixed sample of the training split (`train_loss`, `train_accuracy`). A tracker is
live: while a round trains it gets the running training loss and accuracy every few steps and each evaluation as
it is made (`RoundStream`), and each round's summary when the round is published.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth import trackers
from lth.checkpoint import atomic_write, read_json, round_dir
from lth.distributed import is_main, main_only

if TYPE_CHECKING:
    from lth.train import Evaluation

JSONL_FILE = "metrics.jsonl"
# A round's summary in the trackers: these of its metrics (bits per character: language models only); not the best
# test accuracy over the round, chosen on the test set (metrics.jsonl keeps it)
_SUMMARY = (
    "density",
    "early_stop_test_accuracy",
    "test_accuracy",
    "early_stop_step",
    "early_stop_test_bpc",
    "test_bpc",
)


@main_only  # under torchrun only rank 0 writes
def round_published(run_dir: Path, round_index: int, logger: str) -> None:
    rounds = _published(run_dir)
    lines = [json.dumps(line) for metrics in rounds for line in _lines(metrics)]
    atomic_write(run_dir / JSONL_FILE, ("\n".join(lines) + "\n").encode())
    if logger in trackers.TRACKERS:
        metrics = rounds[round_index]
        summary = {key: metrics[key] for key in _SUMMARY if metrics.get(key) is not None}
        tracker = trackers.opened(run_dir)
        tracker.send("rounds", None, summary, round_index)
        tracker.flush()


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


class RoundStream:
    """A round's live stream into the run's tracker: `train` is a progress callback of the train loop,
    `evaluation` takes each evaluation as it is recorded."""

    def __init__(self, tracker: trackers.Tracker, round_index: int) -> None:
        self.tracker, self.round_index = tracker, round_index

    def train(self, step: int, loss: float, accuracy: float) -> None:
        values = {"train/loss": loss, "train/accuracy": accuracy}  # the running means of the epoch so far
        self.tracker.send(f"round_{self.round_index:02d}/train", self.round_index, values, step)

    def evaluation(self, evaluation: Evaluation) -> None:
        values = {"train/lr": evaluation.lr}
        for split, prefix in (("val", "val"), ("test", "test"), ("train", "train_sample")):
            for metric in ("loss", "accuracy"):
                value = getattr(evaluation, f"{split}_{metric}")
                if value is not None:
                    values[f"{prefix}/{metric}"] = value
        self.tracker.send(f"round_{self.round_index:02d}/evaluation", self.round_index, values, evaluation.step)
        self.tracker.flush()  # an evaluation is worth seeing now, not when the writer's buffer fills

    def close(self) -> None:
        self.tracker.end_round(self.round_index)


def live_stream(logger: str, run_dir: Path, round_index: int) -> RoundStream | None:
    """The stream a round writes while it trains, or None (no tracker; not rank 0)."""
    return RoundStream(trackers.opened(run_dir), round_index) if logger in trackers.TRACKERS and is_main() else None
