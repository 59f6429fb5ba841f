"""How a run is asked to stop: Ctrl-C, SIGTERM (pre-emption) and SIGUSR2 (submitit's time-limit notice)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopSignals:
    """Ctrl-C and SIGTERM (cluster pre-emption) ask the run to stop at the next step, after saving its state.

    A second signal stops at once (KeyboardInterrupt). Handlers can only be set from the main thread; a launcher
    that runs jobs in worker threads keeps its own handling. SIGUSR2, submitit's notice that a SLURM job nears
    its time limit, stops the run the same way when a handler for it is installed (submitit's), and is passed on
    to that handler once the state is saved: it requeues the job, whose rerun continues the run.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            handled = [signal.SIGINT, signal.SIGTERM]
            if callable(signal.getsignal(signal.SIGUSR2)):
                handled.append(signal.SIGUSR2)
            for signum in handled:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if kind is not None and self.received == signal.SIGUSR2 and signal.SIGUSR2 in self._previous:
            signal.raise_signal(signal.SIGUSR2)  # the run stopped early: now the requeue

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the block runs (a run's start-up, before
    `StopSignals` can stop it at a step boundary); Python's default would end the process without a word."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
