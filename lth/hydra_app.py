"""The Hydra entry point behind `lth run`: Hydra composes the config, creates the run directory, runs jobs.

A single run stops the process on an error (one line, lth's exit code). A job of a `-m` sweep must not: Hydra's
launchers run the remaining jobs only when a job returns or raises an Exception, and a SystemExit would end the
whole sweep. So a sweep job records its failure (run.json, `sweep.json`) and returns; `lth run -m` exits
non-zero at the end, naming the failed jobs. An interruption (Ctrl-C, pre-emption) still ends the sweep.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lth import config, sweeps
from lth.checkpoint import now
from lth.errors import ConfigError, Interrupted, LthError


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(composed: DictConfig) -> None:
    import torch  # only when a job runs: `lth run --help` and `--cfg job` never get here, and start fast

    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    threads = sweeps.job_threads(hydra_config.launcher)
    if threads is not None:
        torch.set_num_threads(threads)
    if hydra_config.mode != RunMode.MULTIRUN:
        try:
            _run(composed, run_dir, sweep_job=False)
        except LthError as error:
            # Hydra would print a traceback for any exception; SystemExit passes through it untouched.
            print(f"lth: error: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
        return
    sweeps.stop_when_launcher_dies(hydra_config.launcher)
    if sweeps.runs_in_parallel(hydra_config.launcher):
        from lth import ui

        ui.label_lines(sweeps.job_label(hydra_config))  # side by side, every line says which job it is from
    sweeps.update_job(status="running", dir=str(run_dir), threads=torch.get_num_threads(), started=now())
    try:
        _run(composed, run_dir, sweep_job=True)
    except Exception as error:
        if not isinstance(error, LthError):  # a crash: its traceback is what a bug report needs
            traceback.print_exc()
        message = str(error) if isinstance(error, LthError) else f"{type(error).__name__}: {error}"
        print(f"lth: error: job {hydra_config.job.num} ({run_dir}): {message}", file=sys.stderr)
        sweeps.update_job(status="failed", error=message, ended=now())
        return
    except BaseException:  # Ctrl-C, SIGTERM or a cluster's pre-emption: the run saved its state
        sweeps.update_job(status="interrupted", ended=now())
        if sweeps.launcher_gone():  # an orphaned worker: no launcher will send it another job
            os._exit(Interrupted.exit_code)
        raise
    sweeps.update_job(status="finished", ended=now())


# Config keys that name paths: with `hydra.job.chdir=true` the job runs inside its run directory, so a relative
# path means what it meant where `lth run` was typed.
PATH_KEYS = ("dataset.root", "prune.masks_from")


def _run(composed: DictConfig, run_dir: Path, sweep_job: bool) -> None:
    """Run the job's experiment; bad input found only now leaves no directory behind."""
    from lth import runs

    launch_dir = Path(HydraConfig.get().runtime.cwd)
    if Path.cwd() != launch_dir:  # hydra.job.chdir=true
        for key in PATH_KEYS:
            value = OmegaConf.select(composed, key)
            if value is not None and not Path(value).is_absolute():
                OmegaConf.update(composed, key, str(launch_dir / value))
    try:
        cfg = config.from_dictconfig(composed)
        if sweep_job:
            runs.run_or_continue(cfg, run_dir)
        elif cfg.train.replicates > 1:
            runs.run_replicates(cfg, run_dir)
        else:
            runs.run(cfg, run_dir, new_run=True)
    except ConfigError:
        os.chdir(launch_dir)  # out of the run directory (hydra.job.chdir=true) before it may be removed
        _discard_if_unused(run_dir)
        raise


def _discard_if_unused(run_dir: Path) -> None:
    """Remove the run directory Hydra made for this job when bad input stopped it before lth wrote anything
    (e.g. a data file that turned out unreadable): bad input leaves nothing on disk."""
    if not run_dir.is_dir() or [p.name for p in run_dir.iterdir()] != [".hydra"]:
        return
    shutil.rmtree(run_dir)
    if Path.cwd() not in run_dir.parents:  # only folders Hydra made under the working directory go too
        return
    for parent in run_dir.parents:  # outputs/<date>/ too, when this job made it: rmdir only removes empty ones
        if parent == Path.cwd():
            break
        try:
            parent.rmdir()
        except OSError:
            break
