"""`lth resume`: continue what was stopped, from any moment. A run continues from its newest intact state; a
sweep resumes every job its `sweep.json` lists (started, never started, or killed before its run was recorded);
a replicate group trains on together; a folder that holds only Hydra's `.hydra/` record starts from it. Every run
is checked before any continues, so a refused change leaves everything as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from lth import distributed, preflight, sweeps
from lth import structured as config
from lth.checkpoint import RUN_FILE, find_runs, now, published_rounds, read_json, read_run_record
from lth.errors import ConfigError, LthError, RunFailed
from lth.runs import config_changes, replicate_runs, run, run_or_continue, run_together, saved_config
from lth.schema import Config
from lth.ui import make_console

HYDRA_CONFIG = Path(".hydra") / "config.yaml"  # Hydra's record of the config it composed for the command


def resume(path: Path, overrides: list[str], force: bool = False, console: Console | None = None) -> None:
    """Continue the run at `path`, or every unfinished run under it (a sweep), applying allowed overrides.

    Every run is checked before any of them continues, so a refused change or a damaged run stops the whole
    command before anything is written.
    """
    console = console or make_console(quiet=not distributed.is_main())
    if (path / sweeps.SWEEP_FILE).is_file():
        _resume_sweep(path, overrides, force, console)
        return
    unrecorded = _unrecorded_start(path, overrides, force)
    if unrecorded is not None:
        run_or_continue(unrecorded, path, console)
        return
    runs = find_runs(path)
    planned = [_plan_resume(run_dir, overrides, force) for run_dir in runs]
    group = len(runs) > 1 and all(run.parent == path and run.name.startswith("seed_") for run in runs)
    if group and len({published_rounds(run_dir) for run_dir in runs}) == 1:  # replicates at one round: together
        run_together([(cfg, run_dir) for run_dir, cfg, _ in planned], console, planned[0][2], resume_path=path)
        return
    for run_dir, cfg, changes in planned:
        if len(runs) > 1 and not changes and read_run_record(run_dir).get("status") == "finished":
            console.print(f"{run_dir}: finished, skipped", soft_wrap=True)
            continue
        run(cfg, run_dir, console, changes=changes)


def _unrecorded_start(path: Path, overrides: list[str], force: bool) -> Config | None:
    """The config of a run Hydra made a directory for (`.hydra/config.yaml`) that lth had not recorded yet when it
    stopped (killed during start-up), or of a replicate group not all of whose runs were recorded; else None."""
    if not (path / HYDRA_CONFIG).is_file() or (path / RUN_FILE).exists():
        return None
    try:
        saved = config.from_dictconfig(OmegaConf.load(path / HYDRA_CONFIG))
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ConfigError):  # stopped while Hydra wrote it
        raise ConfigError(
            f"{path}: Hydra's record of the command ({HYDRA_CONFIG}) is incomplete, so the run was stopped before "
            "lth started it and nothing trained; remove the folder and run the command again"
        ) from None
    members = replicate_runs(saved, path) if saved.train.replicates > 1 else [(saved, path)]
    if all((run_dir / RUN_FILE).exists() for _, run_dir in members):
        return None  # every run recorded: each is resumed from its own record
    cfg = _resumed_config(saved, overrides, force)
    preflight.environment(cfg)
    return cfg


def _resume_sweep(sweep_dir: Path, overrides: list[str], force: bool, console: Console) -> None:
    """Resume every job of the sweep that `sweep_dir/sweep.json` lists: continue the started ones, start the ones
    never started (killed before their run was recorded, or never reached), keeping the record's statuses."""
    from lth.config import compose

    try:
        record = read_json(sweep_dir / sweeps.SWEEP_FILE)
        jobs = list(record["jobs"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{sweep_dir / sweeps.SWEEP_FILE} cannot be read as a sweep record; it is damaged") from None
    planned = []
    for job in jobs:
        job_dir = _job_dir(sweep_dir, job)
        job_cfg = compose([o for o in job["overrides"] or [] if not o.startswith("hydra")])
        cfg = _resumed_config(job_cfg, overrides, force)
        preflight.environment(cfg)
        planned.append((job, job_dir, cfg))
    failed = []
    for job, job_dir, cfg in planned:
        if job["status"] == "finished" and not overrides:
            console.print(f"{job_dir}: finished, skipped", soft_wrap=True)
            continue
        sweeps.update_entry(sweep_dir, job["num"], status="running", dir=str(job_dir.absolute()), started=now())
        try:
            run_or_continue(cfg, job_dir, console)
        except LthError as error:  # the next jobs still run, as in `lth run -m`
            console.print(f"lth: error: job {job['num']} ({job_dir}): {error}", soft_wrap=True)
            sweeps.update_entry(sweep_dir, job["num"], status="failed", error=str(error), ended=now())
            failed.append(f"#{job['num']} ({error})")
            continue
        except BaseException:
            sweeps.update_entry(sweep_dir, job["num"], status="interrupted", ended=now())
            raise
        sweeps.update_entry(sweep_dir, job["num"], status="finished", ended=now())
    sweeps.end(sweep_dir)
    if failed:
        raise RunFailed(f"{len(failed)} of {len(planned)} sweep jobs did not finish: {'; '.join(failed)}")


def _job_dir(sweep_dir: Path, job: dict[str, Any]) -> Path:
    """A sweep job's directory: the one its entry records, found in `sweep_dir` even when the sweep folder was
    moved or copied since (the record holds absolute paths), or Hydra's `<sweep dir>/<job number>` for a job that
    never started."""
    if not job.get("dir"):
        return sweep_dir / str(job["num"])
    recorded = Path(job["dir"])
    if recorded.absolute().is_relative_to(sweep_dir.absolute()):
        return recorded
    return sweep_dir / recorded.name


def _plan_resume(run_dir: Path, overrides: list[str], force: bool) -> tuple[Path, Config, dict[str, Any]]:
    """The config a run continues with and the keys it changes, after every check that needs no lock."""
    saved = saved_config(run_dir)
    cfg = _resumed_config(saved, overrides, force)
    changes, _ = config_changes(saved, cfg)
    preflight.environment(cfg)
    return run_dir, cfg, changes


def _resumed_config(saved: Config, overrides: list[str], force: bool) -> Config:
    """`saved` with a resume's overrides: only keys that cannot change results, unless forced; never the model's
    or the data's shapes."""
    cfg = config.with_overrides(saved, overrides)
    changes, refused = config_changes(saved, cfg)
    reshaped = [f"{key} ({old} -> {new})" for key, (old, new) in changes.items() if config.decides_shapes(key)]
    if reshaped:
        raise ConfigError(
            f"resume cannot change {', '.join(reshaped)}, even with --force: the run's saved weights and masks "
            "have the shapes of its own model and data; start a new run"
        )
    if refused and not force:
        raise ConfigError(
            f"resume would change {refused}; only prune.rounds, ui.*, checkpoint.* and logger may change "
            "(add --force to change anyway; it is recorded in run.json)"
        )
    return cfg
