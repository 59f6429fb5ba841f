"""What a run shows while it works: a live progress bar per round and a line per finished round."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lth.headline import headline, value

LOG_WIDTH = 240  # columns of a console that is not a terminal: a log or a pipe never wraps a table


def make_console(**kwargs: Any) -> Console:
    """A console as wide as the terminal, or, writing to a file or pipe (SLURM logs, `| tee`), wide enough for
    every table lth prints ($COLUMNS still wins when set)."""
    console = Console(**kwargs)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = LOG_WIDTH
    return console


LOG_EVERY_FRACTION = 0.1  # without a terminal: a progress line each 10% of a round ...
LOG_EVERY_SECONDS = 60.0  # ... or each minute, whichever comes first


class RunDisplay:
    """Progress bars when `live` in a terminal; in a log (SLURM, `| tee`, `ui.progress` on but no terminal) a
    progress line at a steady rhythm instead; a plain line per finished round either way."""

    def __init__(self, live: bool, console: Console | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or make_console()
        self.live = live and self.console.is_terminal
        self.log_lines = live and not self.console.is_terminal
        self._clock = clock
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> RunDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[accuracy]:.2%}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_round(
        self, round_index: int, density: float, total_steps: int, steps_per_epoch: int, completed: int = 0
    ) -> None:
        self._steps_per_epoch = steps_per_epoch
        self._epochs = total_steps // steps_per_epoch
        self._round = round_index
        self._density = density
        self._total = total_steps
        self._started_at, self._started_step = self._clock(), completed
        self._logged_at, self._logged_step = self._started_at, completed
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                self._describe(completed), total=total_steps, completed=completed, loss=0.0, accuracy=0.0
            )

    def step(self, step: int, loss: float, accuracy: float) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=step, description=self._describe(step), loss=loss, accuracy=accuracy
            )
        elif self.log_lines:
            now = self._clock()
            steps_due = step - self._logged_step >= LOG_EVERY_FRACTION * self._total
            due = steps_due or now - self._logged_at >= LOG_EVERY_SECONDS
            if due and step < self._total:
                self._logged_at, self._logged_step = now, step
                self.console.print(self._log_line(step, loss, accuracy, now), soft_wrap=True)

    def _log_line(self, step: int, loss: float, accuracy: float, now: float) -> str:
        elapsed = now - self._started_at
        rate = (step - self._started_step) / elapsed if elapsed > 0 else 0.0
        eta = _duration((self._total - step) / rate) if rate > 0 else "?"
        return (
            f"{self._describe(step)} · step {step}/{self._total} ({step / self._total:.0%}) · "
            f"loss {loss:.4f} · acc {accuracy:.2%} · {_duration(elapsed)} elapsed, eta {eta}"
        )

    def finish_round(self, row: dict[str, Any], label: str = "") -> None:
        """One line for a finished round; `label` names the replicate when several train together."""
        early = "-" if row["early_stop_step"] is None else row["early_stop_step"]
        lead = headline(row)  # accuracy, or a language model's bits per character
        prefix = f"{label}  " if label else ""
        self.console.print(
            f"{prefix}round {row['round']:>2}  density {row['density']:7.2%}  {lead.short} "
            f"{value(row.get(lead.early_stop), lead)} at early stop (step {early})  final "
            f"{value(row.get(lead.final), lead)}  {row['seconds']:.1f}s",
            soft_wrap=True,
        )

    def _describe(self, step: int) -> str:
        epoch = min(step // self._steps_per_epoch + 1, self._epochs)
        return f"round {self._round} · density {self._density:.1%} · epoch {epoch}/{self._epochs}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
