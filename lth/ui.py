"""What a run shows while it works: a live progress bar per round and a line per finished round."""

from __future__ import annotations

import os
import sys
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


class ReaderlessStdout:
    """Standard output that outlives its reader: once the reader of a pipe has gone (`lth run ... | head`), what a
    run still prints goes to /dev/null and the run trains on to its end (it is not killed half-way through a round,
    its record left saying `running`)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop_reader()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop_reader()

    def _drop_reader(self) -> None:
        try:  # the file descriptor too, so the interpreter's last flush of the old buffer cannot fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
            pass
        self._stream = open(os.devnull, "w")  # noqa: SIM115 -- lives as long as the process

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... of the stream it writes to
        return getattr(self._stream, name)


class LabelledLines:
    """Standard output whose every line starts with a label: jobs run side by side (joblib) write into one
    terminal or log, and each line must say which job it comes from."""

    def __init__(self, stream: Any, label: str) -> None:
        self._stream = stream
        self._label = f"[{label}] "
        self._at_line_start = True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self._at_line_start and piece.strip("\r\n"):
                self._stream.write(self._label)
            self._stream.write(piece)
            self._at_line_start = piece.endswith("\n")
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


def label_lines(label: str) -> None:
    """Prefix every line this process prints (stdout and stderr) with `label`."""
    sys.stdout = LabelledLines(sys.stdout, label)
    sys.stderr = LabelledLines(sys.stderr, label)


def outlive_reader() -> None:
    """Make `sys.stdout` a `ReaderlessStdout` (for the commands that train: `lth run`, `lth resume`)."""
    if not isinstance(sys.stdout, ReaderlessStdout):
        sys.stdout = ReaderlessStdout(sys.stdout)


WIDE_PROGRESS = 110  # columns below which the progress bar drops what it can spare
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

    def __init__(
        self,
        live: bool,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.console = console or make_console()
        if width is not None:  # ui.width
            self.console.width = width
        self.compact = self.console.width < WIDE_PROGRESS
        self.live = live and self.console.is_terminal
        self.log_lines = live and not self.console.is_terminal
        self._clock = clock
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> RunDisplay:
        if self.live:
            # In a narrow terminal (80 columns) the step count and the ETA keep their room; the bar, the accuracy
            # and the elapsed time give theirs up.
            metrics = (
                "loss {task.fields[loss]:.3f}"
                if self.compact
                else ("loss {task.fields[loss]:.4f}  acc {task.fields[accuracy]:.2%}")
            )
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=8 if self.compact else 40),
                MofNCompleteColumn(),
                TextColumn(metrics),
                *([] if self.compact else [TimeElapsedColumn()]),
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
        if self.log_lines:  # a log shows when training (not start-up, data or checks) begins
            steps = f"training steps {completed + 1}-{total_steps}"
            self.console.print(f"round {round_index} · density {density:.1%} · {steps}")
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
        if self.compact and self._progress is not None:
            return f"r{self._round} {self._density:.1%} ep {epoch}/{self._epochs}"
        return f"round {self._round} · density {self._density:.1%} · epoch {epoch}/{self._epochs}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
