"""Runs: open, lock and record them, resume them, and drive their rounds (`lth.imp` does one round).

A group of runs trains round by round together: the replicates of one config (`train.replicates`), or one run
alone, a group of one. Each run keeps its own directory, lock, run.json and checkpoints. Every round is read
back from disk before the next prunes, so resuming a run is running it again: the loop starts at the first
round not published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from lth import data, distributed, models, preflight, trackers
from lth import structured as config
from lth.checkpoint import (
    FORMAT_VERSION,
    INIT_FILE,
    RUN_FILE,
    clear_states,
    is_sealed,
    load_sealed,
    now,
    published_rounds,
    read_run_record,
    run_lock,
    seal_tensors,
    update_run_record,
)
from lth.errors import ConfigError, Interrupted, RunFailed
from lth.imp import Rounds, round_together
from lth.report import Group, read_run, run_rows
from lth.report_tables import aggregate_table, round_table
from lth.schema import Config
from lth.signals import StopSignals, sigterm_interrupts
from lth.structured import config_hash
from lth.ui import RunDisplay, make_console

Weights = dict[str, torch.Tensor]
Member = tuple[Config, Path]  # one run of a group: its config and directory
_PACKAGES = ("lth", "torch", "torchvision", "hydra-core", "omegaconf", "numpy", "safetensors")


def run(
    cfg: Config,
    run_dir: Path,
    console: Console | None = None,
    changes: dict[str, Any] | None = None,
    new_run: bool = False,
) -> list[dict[str, Any]]:
    """Run (or continue) the IMP rounds of `cfg` in `run_dir`; return the rows of all finished rounds.

    `changes` are the config keys a resume changed (old, new), recorded in run.json; a run whose results-
    determining config differs from the one it started with is refused unless such changes were allowed.
    `new_run` (from `lth run`) refuses a directory that already holds a run. Under torchrun every rank calls
    this; rank 0 alone writes and prints (see lth.distributed).
    """
    return run_together([(cfg, run_dir)], console, changes, new_run, resume_path=run_dir)[0]


def replicate_runs(cfg: Config, group_dir: Path) -> list[Member]:
    """`train.replicates=N`: seeds seed..seed+N-1 of `cfg`, each in its own run directory `group_dir/seed_<s>`."""
    seeds = range(cfg.seed, cfg.seed + cfg.train.replicates)
    return [(config.with_overrides(cfg, [f"seed={seed}"]), group_dir / f"seed_{seed}") for seed in seeds]


def run_replicates(cfg: Config, group_dir: Path, console: Console | None = None) -> list[list[dict[str, Any]]]:
    """New runs of `cfg`'s replicates (`replicate_runs`), trained together round by round (lth.replicates)."""
    return run_together(replicate_runs(cfg, group_dir), console, new_run=True, resume_path=group_dir)


def run_together(
    members: list[Member],
    console: Console | None = None,
    changes: dict[str, Any] | None = None,
    new_run: bool = False,
    *,
    resume_path: Path,
) -> list[list[dict[str, Any]]]:
    """Run the rounds of a group of runs (see `run`); `resume_path` is what the message after a stop names."""
    console = console or make_console(quiet=not distributed.is_main())
    made = [run_dir for _, run_dir in members if not run_dir.exists()]  # replicates' own directories
    for run_dir in made:
        run_dir.mkdir(parents=True)
    try:
        opened = _run_rounds(members, console, changes, new_run, resume_path)
    except ConfigError:
        for run_dir in made:  # bad input found before anything was written leaves nothing on disk
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    results = []
    for member in opened:
        rows = run_rows(member.run_dir)
        title = f"{member.cfg.model.name} on {member.cfg.dataset.name}, seed {member.cfg.seed}: {member.run_dir}"
        console.print(round_table(rows, title=title))
        results.append(rows)
    if len(opened) > 1:  # replicates: their spread is what a researcher reads first
        group = Group(label={}, runs=[read_run(member.run_dir) for member in opened])
        console.print(aggregate_table([group], title=f"{_seeds(opened)}: mean ± std over {len(opened)} seeds"))
    return results


def _seeds(opened: list[OpenRun]) -> str:
    seeds = [member.cfg.seed for member in opened]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _run_rounds(
    members: list[Member], console: Console, changes: dict[str, Any] | None, new_run: bool, resume_path: Path
) -> list[OpenRun]:
    """The driver: lock and open every run, train the rounds not yet published, record how the runs ended."""
    lead = members[0][0]
    with contextlib.ExitStack() as held:
        for _, run_dir in members:
            held.enter_context(run_lock(run_dir))
        with _starting(members, new_run, resume_path):
            opened = open_group(members, changes)
        first = opened[0]
        console.print(
            f"{lead.model.name} on {lead.dataset.name}, {_seeds(opened)}: {resume_path} (round {first.first} of "
            f"{lead.prune.rounds}; if stopped: lth resume {resume_path})",
            soft_wrap=True,
        )
        for line in preflight.advice(lead, first.dataset):
            console.print(line, soft_wrap=True)
        with (
            StopSignals() as stop,
            RunDisplay(live=lead.ui.progress, console=console, width=lead.ui.width) as display,
            _outcome(opened, console, resume_path),
            trackers.session((member.cfg, member.run_dir) for member in opened),  # logger=: closed with the rounds
        ):
            group = [member.rounds(display, stop) for member in opened]
            for round_index in range(opened[0].first, lead.prune.rounds + 1):
                rows = [group[0].run_round(round_index)] if len(group) == 1 else round_together(group, round_index)
                for member, row in zip(opened, rows, strict=True):
                    update_run_record(member.run_dir, rounds_finished=round_index + 1)
                    display.finish_round(row, label=member.label if len(opened) > 1 else "")
                distributed.barrier()  # round r is on disk before any rank reads it to prune round r+1
                if stop.received and round_index < lead.prune.rounds:
                    raise Interrupted(f"stopped after round {round_index}")
        for member in opened:
            update_run_record(member.run_dir, status="finished")
    return opened


@contextlib.contextmanager
def _starting(members: list[Member], new_run: bool, resume_path: Path) -> Iterator[None]:
    """A run is resumable from the moment its directory exists: a new run is recorded as `starting`, with its
    config, before its data loads and its model is built (every member of a replicate group at once, so a resume
    finds them all). SIGTERM during start-up stops like Ctrl-C (exit 130); bad input found there removes the
    record again, so it leaves nothing on disk."""
    if new_run:
        for _, run_dir in members:
            preflight.no_run_in(run_dir)
        distributed.barrier()  # under torchrun: every rank has found no run here before rank 0 records this one
    recorded = [run_dir for _, run_dir in members if not (run_dir / RUN_FILE).exists()]
    for cfg, run_dir in members:
        if run_dir in recorded:
            update_run_record(run_dir, status="starting", rounds_finished=0, events=[], **_plan_record(cfg))
    try:
        with sigterm_interrupts():
            yield
    except ConfigError:
        for run_dir in recorded:
            (run_dir / RUN_FILE).unlink(missing_ok=True)
        raise
    except KeyboardInterrupt:
        print(f"lth: interrupted while starting, before any round trained; resume: lth resume {resume_path}")
        raise SystemExit(Interrupted.exit_code) from None
    except OSError as error:
        _raise_if_disk_full(error, resume_path)
        raise


@contextlib.contextmanager
def _outcome(opened: list[OpenRun], console: Console, resume_path: Path) -> Iterator[None]:
    """Record in run.json how the rounds stopped: interrupted (exit 130, resumable) or failed."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as stopped:
        for member in opened:
            update_run_record(member.run_dir, status="interrupted")
        console.print(
            f"interrupted ({stopped or 'at once'}); finished rounds and the training state are kept. "
            f"Resume: lth resume {resume_path}",
            soft_wrap=True,
        )
        raise SystemExit(Interrupted.exit_code) from None
    except Exception as error:  # divergence, a broken invariant, a full disk or a crash: finished rounds stay
        for member in opened:
            with contextlib.suppress(OSError):  # the disk may be full
                update_run_record(member.run_dir, status="failed")
        if isinstance(error, OSError):
            _raise_if_disk_full(error, resume_path)
        raise


def _raise_if_disk_full(error: OSError, resume_path: Path) -> None:
    """A full disk (or quota) as one line that says what to do; the data written so far is intact."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise RunFailed(
            f"no space left on the device: {error.filename or 'a file of the run'} could not be written; the "
            f"finished rounds and saved states are intact; free some space, then: lth resume {resume_path}"
        ) from None


@dataclass
class OpenRun:
    """A run directory locked, checked and recorded as running, with its data, model and θ0 (`open_run`)."""

    cfg: Config
    run_dir: Path
    dataset: data.Dataset
    model: nn.Module
    init: Weights
    borrowed_from: Path | None
    first: int  # the first round not finished

    @property
    def label(self) -> str:
        return f"seed {self.cfg.seed}"

    def rounds(self, display: RunDisplay, stop: StopSignals) -> Rounds:
        return Rounds(self.cfg, self.run_dir, self.model, self.dataset, self.init, display, stop, self.borrowed_from)


def open_group(members: list[Member], changes: dict[str, Any] | None) -> list[OpenRun]:
    """Open every run of a group (locked by the caller); they must all be at the same round."""
    opened = [open_run(cfg, run_dir, changes) for cfg, run_dir in members]
    if len(opened) > 1:
        _share_test_split(opened)
    starts = {member.first for member in opened}
    if len(starts) > 1:  # replicates train each round together, so they must all be at the same one
        raise ValueError(f"runs trained together have finished different rounds: {sorted(starts)}")
    return opened


def open_run(cfg: Config, run_dir: Path, changes: dict[str, Any] | None) -> OpenRun:
    """Check the run's record, load its data, build its model and θ0, and record it as running."""
    record = _check_record(run_dir, cfg, changes)
    device = preflight.resolve_device(cfg.device)
    dataset = data.load(cfg.dataset, cfg.seed, device)
    preflight.model_fits(cfg, dataset)
    torch.manual_seed(cfg.seed)
    model = models.build(cfg.model, dataset.input_shape, dataset.num_classes).to(device)
    borrowed_from = preflight.built_model(cfg, model, dataset)
    first = published_rounds(run_dir)  # a round missing between published ones is refused
    distributed.barrier()  # every rank has looked at the directory before rank 0 writes to it
    if not is_sealed(run_dir, INIT_FILE):
        seal_tensors(run_dir, INIT_FILE, model.state_dict())
    if changes and any(config.decides_results(key) for key in changes):
        clear_states(run_dir)  # a state trained under the old settings must not continue under the new
    event = {"event": "resumed" if record and record.get("events") else "started", "time": now()}
    update_run_record(
        run_dir,
        status="running",
        device=str(device),
        rounds_finished=first,
        **_plan_record(cfg),
        versions=_versions(),
        code=code_version(),
        events=[*(record or {}).get("events", []), {**event, **({"changes": changes} if changes else {})}],
    )
    distributed.barrier()  # θ0 is on disk for every rank to read
    init = load_sealed(run_dir, INIT_FILE, str(device))
    return OpenRun(cfg, run_dir, dataset, model, init, borrowed_from, first)


def _plan_record(cfg: Config) -> dict[str, Any]:
    """What run.json says of the run's plan, from the moment it starts: its format, config, hash and rounds."""
    return {
        "format_version": FORMAT_VERSION,
        "config": config.to_container(cfg),
        "config_hash": config_hash(cfg),
        "rounds_planned": cfg.prune.rounds + 1,
    }


def _share_test_split(opened: list[OpenRun]) -> None:
    """Replicates differ in their train/validation split, never in the test set: one copy serves them all."""
    shared = opened[0].dataset.test
    for member in opened[1:]:
        test = member.dataset.test
        if torch.equal(test.images, shared.images):  # False for other shapes too
            member.dataset = dataclasses.replace(member.dataset, test=shared)


def run_or_continue(cfg: Config, run_dir: Path, console: Console | None = None) -> None:
    """A sweep job's run: a new one, or the job's own run continued as `lth resume` would when `run_dir` already
    holds a run of the same results-determining config (a requeued cluster job lands in the directory it left;
    the same sweep started again finishes what is unfinished). A run of another config there is refused.
    With `train.replicates` the job's runs are its replicates: new ones train together, started ones go on alone."""
    if cfg.train.replicates > 1:
        members = replicate_runs(cfg, run_dir)
        if not any((member_dir / RUN_FILE).exists() for _, member_dir in members):
            run_together(members, console, new_run=True, resume_path=run_dir)
            return
    else:
        members = [(cfg, run_dir)]
    for member_cfg, member_dir in members:
        if not (member_dir / RUN_FILE).exists():
            run(member_cfg, member_dir, console, new_run=True)
            continue
        changes, refused = config_changes(saved_config(member_dir), member_cfg)
        if refused:
            raise ConfigError(
                f"{member_dir} holds a run of another config ({refused}); give this sweep its own hydra.sweep.dir"
            )
        run(member_cfg, member_dir, console, changes=changes)


def saved_config(run_dir: Path) -> Config:
    return config.from_container(read_run_record(run_dir).get("config"), run_dir / RUN_FILE)


def config_changes(saved: Config, cfg: Config) -> tuple[dict[str, list[Any]], str]:
    """The keys `cfg` changes from a run's saved config ({key: [old, new]}), and those that would change its
    results described for an error message ("" when there are none)."""
    changes = config.changed_keys(saved, cfg)
    refused = [key for key in changes if config.decides_results(key)]
    described = ", ".join(f"{key} ({changes[key][0]} -> {changes[key][1]})" for key in refused)
    return {key: list(change) for key, change in changes.items()}, described


def _check_record(run_dir: Path, cfg: Config, changes: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's existing record, after checking that this lth can continue it with this config."""
    if not (run_dir / RUN_FILE).exists():
        return None
    record = read_run_record(run_dir)
    if record.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{run_dir} was written in outputs format {record.get('format_version')}; "
            f"this lth reads format {FORMAT_VERSION}"
        )
    if record.get("config_hash") != config_hash(cfg) and not changes:
        raise ConfigError(f"{run_dir / RUN_FILE}: its config no longer matches its config hash; the record was edited")
    return record


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@functools.cache
def code_version() -> dict[str, Any]:
    """The lth code that ran: its version, and when it runs from a git checkout, the commit and whether the tree
    had uncommitted changes (`dirty`), so a result can be traced to its code. Not part of config_hash."""
    import lth

    code: dict[str, Any] = {"version": lth.__version__}
    source = Path(lth.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout

    top = git("rev-parse", "--show-toplevel")  # lth's own checkout, not a repository an install lies inside
    commit = git("rev-parse", "HEAD") if top is not None and Path(top.strip()).resolve() == source else None
    if commit is not None:
        status = git("status", "--porcelain", "--untracked-files=no")
        code["commit"] = commit.strip()
        code["dirty"] = bool(status and status.strip())
    return code
