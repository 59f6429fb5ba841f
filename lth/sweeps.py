"""Sweeps: the sweep record `sweep.json`, the failure summary of `lth run -m`, and how parallel jobs share cores.

`sweep.json` sits in the multirun folder next to the job directories and is the sweep's own record: the grid
(swept keys and their values, the overrides every job shares, the job count), when it started and ended, and
per job its overrides, directory, status (pending, running, finished, failed, interrupted) and error. The main
process writes the grid before any job starts (`SweepRecord`, a Hydra callback); each job updates its own entry
as it starts and ends, possibly from another process or node (joblib, submitit), so every update happens under
an exclusive lock on the multirun folder itself, and every write is atomic.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lth import distributed
from lth.checkpoint import SWEEP_FILE, now, read_json, write_json
from lth.config import SweepGrid, sweep_grid
from lth.errors import ConfigError, RunFailed

MAX_DEFAULT_JOBS = 8  # each job holds its own copy of the dataset; more parallel jobs rarely pay on one machine

_started: list[Path] = []  # sweep folders this process started, for `raise_for_failures`


def cores() -> int:
    """CPU cores this process may run on (its affinity mask: what a cgroup or `taskset` leaves it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# The environment variables lth reads for sweeps, and what each means (for the error message).
ENVIRONMENT = {"LTH_JOBS": "parallel sweep jobs", "LTH_THREADS": "torch threads per job"}


def env_count(name: str) -> int | None:
    """A whole number >= 1 from environment variable `name`; None when it is unset or empty; ConfigError otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{name}={os.environ[name]!r} is not allowed; {name} ({ENVIRONMENT[name]}) must be a whole "
            "number >= 1, or unset"
        )
    return value


def check_environment() -> None:
    """Refuse a malformed $LTH_JOBS or $LTH_THREADS before any run starts (they are read inside Hydra's jobs)."""
    for name in ENVIRONMENT:
        env_count(name)


def default_jobs() -> int:
    """Parallel jobs of the `lth_joblib` launcher: $LTH_JOBS, else one per core up to MAX_DEFAULT_JOBS."""
    return env_count("LTH_JOBS") or min(cores(), MAX_DEFAULT_JOBS)


OmegaConf.register_new_resolver("lth.jobs", default_jobs, replace=True)


def job_threads(launcher: DictConfig | None) -> int | None:
    """Torch intra-op threads for one job, so that parallel jobs share the cores instead of oversubscribing them:
    $LTH_THREADS, else the launcher's `cpus_per_task` (submitit), else the cores divided among joblib's `n_jobs`;
    None (torch's own default) when the launcher runs one job at a time."""
    threads = env_count("LTH_THREADS")
    if threads is not None:
        return threads
    if launcher is None:
        return None
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if n_jobs:
        return max(1, cores() // (int(n_jobs) if int(n_jobs) > 0 else cores()))
    return None


def job_label(hydra: DictConfig) -> str:
    """`job 3 (seed=1 prune.rate=0.3)`: the job's number and its values of the keys the sweep varies."""
    sweep_dir, task = Path(hydra.sweep.dir), list(hydra.overrides.task)
    try:
        swept = set(read_json(sweep_dir / SWEEP_FILE)["swept"])
    except (OSError, ValueError, KeyError):
        swept = set()
    values = [override for override in task if override.partition("=")[0].lstrip("+~") in swept]
    return f"job {hydra.job.num}" + (f" ({' '.join(values)})" if values else "")


def runs_in_parallel(launcher: DictConfig | None) -> bool:
    """Whether the launcher runs jobs side by side in processes sharing one output (joblib with n_jobs != 1)."""
    return launcher is not None and "joblib" in str(launcher.get("_target_", "")) and launcher.get("n_jobs") != 1


_launcher_pid: int | None = None  # in a joblib worker: the `lth run -m` process that launched it


def stop_when_launcher_dies(launcher: DictConfig | None) -> None:
    """In a joblib worker, stop the job as pre-emption would (SIGTERM: state saved, `lth resume` continues) once the
    `lth run -m` that launched it is gone. The workers outlive a launcher killed on its own (`kill PID`, not a
    terminal's Ctrl-C, which reaches the whole process group) and would otherwise train on, unwatched."""
    global _launcher_pid
    if _launcher_pid is not None or launcher is None or "joblib" not in str(launcher.get("_target_", "")):
        return
    _launcher_pid = launcher_pid = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lth-launcher-watch", daemon=True).start()


def launcher_gone() -> bool:
    """Whether this process is a joblib worker whose launcher has died (see `stop_when_launcher_dies`)."""
    return _launcher_pid is not None and os.getppid() != _launcher_pid


class SweepRecord(Callback):
    """Writes `sweep.json` when a multirun starts and stamps its end; configured under `hydra.callbacks`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not distributed.is_main():
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        params = config.hydra.sweeper.get("params")
        start(sweep_dir, sweep_grid(list(config.hydra.overrides.task), dict(params) if params else {}))
        _started.append(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not distributed.is_main():
            return
        end(Path(config.hydra.sweep.dir))


def start(sweep_dir: Path, grid: SweepGrid) -> None:
    """Write the sweep record of a sweep about to launch `grid`'s jobs into `sweep_dir`."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs = [{"num": num, "overrides": job, "dir": None, "status": "pending"} for num, job in enumerate(grid.jobs)]
    record = {
        "status": "running",
        "started": now(),
        "swept": grid.swept,
        "base_overrides": grid.base,
        "job_count": len(grid.jobs),
        "jobs": jobs,
    }
    with _locked(sweep_dir):
        write_json(sweep_dir / SWEEP_FILE, record)


def update_job(**fields: Any) -> None:
    """Merge `fields` into the current Hydra job's entry of its sweep's record (rank 0 only under torchrun)."""
    if not distributed.is_main():
        return
    hydra = HydraConfig.get()
    update_entry(Path(hydra.sweep.dir), int(hydra.job.num), list(hydra.overrides.task), **fields)


def update_entry(sweep_dir: Path, num: int, overrides: list[str] | None = None, **fields: Any) -> None:
    """Merge `fields` into job `num`'s entry of the sweep record in `sweep_dir` (its overrides if it has none)."""
    with _locked(sweep_dir):
        path = sweep_dir / SWEEP_FILE
        record = read_json(path) if path.exists() else {"jobs": []}
        jobs = record["jobs"]
        while len(jobs) <= num:  # a job the grid did not foresee (another sweeper): give it an entry
            jobs.append({"num": len(jobs), "overrides": None, "dir": None, "status": "pending"})
        if jobs[num]["overrides"] is None:
            jobs[num]["overrides"] = overrides
        jobs[num].update(fields, updated=now())
        write_json(path, record)


def end(sweep_dir: Path) -> None:
    """Stamp the sweep record's end: finished when every job has, else failed."""
    with _locked(sweep_dir):
        record = read_json(sweep_dir / SWEEP_FILE)
        failed = any(job["status"] != "finished" for job in record["jobs"])
        write_json(sweep_dir / SWEEP_FILE, {**record, "status": "failed" if failed else "finished", "ended": now()})


def raise_for_failures() -> None:
    """After `lth run -m`: RunFailed naming every job of this process's sweeps that did not finish."""
    while _started:
        sweep_dir = _started.pop()
        record = read_json(sweep_dir / SWEEP_FILE)
        unfinished = [job for job in record["jobs"] if job["status"] != "finished"]
        if unfinished:
            shared = set(record["base_overrides"])  # name each job by what sets it apart
            named = "; ".join(
                f"#{job['num']} {' '.join(o for o in job['overrides'] or [] if o not in shared)} ({job['status']}"
                + (f": {job['error']}" if job.get("error") else "")
                + ")"
                for job in unfinished
            )
            raise RunFailed(
                f"{len(unfinished)} of {record['job_count']} sweep jobs did not finish: {named}; "
                f"see {sweep_dir / SWEEP_FILE}"
            )


@contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """Exclusive access to the sweep record across processes: a flock on the folder (the record itself is replaced
    by every write), released however its holder ends."""
    fd = os.open(sweep_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
