"""Metrics streams beside each round's metrics.json: `metrics.jsonl` always, TensorBoard with `logger=tensorboard`.

`metrics.jsonl` is written when a round is published and only from what was published, so it never shows a
number that a finished round does not hold: it is rewritten whole (atomically) from every round's metrics.json,
so a crash or a resume can neither duplicate nor drop lines. TensorBoard is live: while a round trains it gets
the training loss and accuracy every few steps and each evaluation as it is made, one folder per round
(`tensorboard/round_NN/`: the rounds side by side as TensorBoard runs), and a resumed round first drops what the
stopped process wrote after its saved state; the rounds' summaries go to `tensorboard/rounds/` at publish.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.checkpoint import atomic_write, read_json, round_dir
from lth.distributed import is_main, main_only

if TYPE_CHECKING:
    from lth.train import Evaluation

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

    with SummaryWriter(str(run_dir / TENSORBOARD_DIR / "rounds")) as writer:
        for key in _SUMMARY:
            if metrics.get(key) is not None:
                writer.add_scalar(f"rounds/{key}", metrics[key], metrics["round"])


class TensorBoardRound:
    """A round's live TensorBoard stream (`logger=tensorboard`): `train` is a progress callback of the train loop,
    `evaluation` takes each evaluation as it is recorded."""

    def __init__(self, run_dir: Path, round_index: int, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = run_dir / TENSORBOARD_DIR / f"round_{round_index:02d}"
        self.writer = SummaryWriter(str(folder), purge_step=step or None)  # resumed at `step`: later events go

    def train(self, step: int, loss: float, accuracy: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/accuracy", accuracy, step)

    def evaluation(self, evaluation: Evaluation) -> None:
        for split in ("val", "test"):
            for metric in ("loss", "accuracy"):
                value = getattr(evaluation, f"{split}_{metric}")
                if value is not None:
                    self.writer.add_scalar(f"{split}/{metric}", value, evaluation.step)
        self.writer.add_scalar("train/lr", evaluation.lr, evaluation.step)
        self.writer.flush()  # an evaluation is worth seeing now, not when the writer's buffer fills

    def close(self) -> None:
        self.writer.close()


def live_stream(logger: str, run_dir: Path, round_index: int, step: int) -> TensorBoardRound | None:
    """The stream a round writes while it trains from `step`, or None (no live logger; not rank 0)."""
    return TensorBoardRound(run_dir, round_index, step) if logger == "tensorboard" and is_main() else None
