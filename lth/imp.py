"""The IMP driver: train dense, then round after round prune, rewind the survivors, retrain.

Round 0 trains the dense network from its initialisation θ0 and saves the rewind point θk on the way (k =
`prune.rewind_to`, 0 by default). Round r > 0 reads round r-1's final weights and mask from disk, removes the
planned fraction of survivors by `prune.criterion`, resets the survivors (`prune.retrain`: to θk, going on
from step k) and trains again. Reading the previous round back from
disk on every round means a resumed run and an uninterrupted one take exactly the same path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import platform
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from lth import checks, config, data, distributed, loggers, models, replicates
from lth.checkpoint import (
    FORMAT_VERSION,
    INIT_FILE,
    REWIND_FILE,
    RUN_FILE,
    clear_states,
    finished_rounds,
    is_sealed,
    load_sealed,
    load_state,
    load_tensors,
    now,
    publish_round,
    read_run_record,
    run_lock,
    save_state,
    seal_tensors,
    update_run_record,
    verify_round,
)
from lth.config import Config, config_hash
from lth.criteria import Scoring, shuffle_within_layers, signed_constant
from lth.errors import ConfigError, Interrupted
from lth.models import output_layer, prunable_weights
from lth.prune import (
    Masks,
    PruneGroup,
    apply_masks,
    collapsed_layers,
    dense_masks,
    density,
    layer_densities,
    parameter_density,
    plan_round,
    remaining_parameters,
)
from lth.report import find_runs, round_table, run_rows
from lth.seeds import RANDOM_PRUNING, REINIT, SHUFFLE, derive_seed
from lth.train import Trainer, TrainResult, lr_schedule, steps_per_epoch, to_steps
from lth.ui import RunDisplay

Weights = dict[str, torch.Tensor]  # a state dict: parameter and buffer name -> tensor
_PACKAGES = ("lth", "torch", "torchvision", "hydra-core", "omegaconf", "numpy", "safetensors")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} is not available on this machine (no CUDA device); use device=auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device={name} does not exist; this machine has {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


def preflight(cfg: Config) -> None:
    """Environment checks that must pass before a run directory is created."""
    resolve_device(cfg.device)
    data.check(cfg.dataset)
    if cfg.prune.masks_from is not None:
        _check_masks_source(cfg)


def masks_source(cfg: Config) -> Path:
    """The run whose masks `prune.masks_from` names: that run, or, given a folder of runs (a ticket sweep), its one
    run with this run's seed, so one controls sweep over seeds pairs every control with its own seed's ticket."""
    assert cfg.prune.masks_from is not None
    named = Path(cfg.prune.masks_from)
    key = f"prune.masks_from={named}"
    if (named / RUN_FILE).is_file():
        return named
    try:
        runs = find_runs(named)
    except ConfigError as error:
        raise ConfigError(f"{key}: {error}") from None
    same_seed = [run for run in runs if read_run_record(run).get("config", {}).get("seed") == cfg.seed]
    if len(same_seed) != 1:
        found = "no run" if not same_seed else f"{len(same_seed)} runs ({', '.join(map(str, same_seed))})"
        raise ConfigError(f"{key} holds {found} with seed={cfg.seed}; name one run directory instead")
    return same_seed[0]


def _check_masks_source(cfg: Config) -> None:
    """`prune.masks_from` is a run that has finished every round whose mask this run will take."""
    prune = cfg.prune
    source = masks_source(cfg)
    key = f"prune.masks_from={source}"
    needed = prune.rounds if prune.masks_round is None else prune.masks_round
    finished = finished_rounds(source)
    if needed >= finished:
        what = f"round {needed}" if prune.masks_round is not None else f"rounds 1..{needed} (prune.rounds={needed})"
        raise ConfigError(f"{key} has rounds 0..{finished - 1} finished; this run needs the masks of {what}")


def _check_pruning_targets(cfg: Config, model: nn.Module, source: Path | None) -> None:
    """Every `prune.ignore` pattern names a layer, and the masks borrowed from `source` (the run
    `prune.masks_from` names) fit the model, before round 0 trains."""
    names = list(prunable_weights(model))
    for pattern in cfg.prune.ignore:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ConfigError(
                f"prune.ignore pattern {pattern!r} matches no prunable weight of model={cfg.model.name}; "
                f"its prunable weights: {', '.join(names)}"
            )
    if source is None:
        return
    rounds = [cfg.prune.masks_round] if cfg.prune.masks_round is not None else range(1, cfg.prune.rounds + 1)
    expected = {name: tuple(weight.shape) for name, weight in prunable_weights(model).items()}
    for round_index in rounds:
        masks = load_tensors(verify_round(source, round_index) / "mask.safetensors", "cpu")
        found = {name: tuple(mask.shape) for name, mask in masks.items()}
        if found != expected:
            differ = next(
                name for name in sorted(expected.keys() | found.keys()) if found.get(name) != expected.get(name)
            )
            raise ConfigError(
                f"prune.masks_from={source}: its round {round_index} masks do not fit model={cfg.model.name} on "
                f"dataset={cfg.dataset.name}: {differ} is {found.get(differ, 'missing')} there, "
                f"{expected.get(differ, 'absent')} here"
            )


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


def replicate_runs(cfg: Config, group_dir: Path) -> list[tuple[Config, Path]]:
    """`train.replicates=N`: seeds seed..seed+N-1 of `cfg`, each in its own run directory `group_dir/seed_<s>`."""
    seeds = range(cfg.seed, cfg.seed + cfg.train.replicates)
    return [(config.with_overrides(cfg, [f"seed={seed}"]), group_dir / f"seed_{seed}") for seed in seeds]


def run_replicates(cfg: Config, group_dir: Path, console: Console | None = None) -> list[list[dict[str, Any]]]:
    """New runs of `cfg`'s replicates (`replicate_runs`), trained together round by round (lth.replicates)."""
    return run_together(replicate_runs(cfg, group_dir), console, new_run=True, resume_path=group_dir)


def run_together(
    members: list[tuple[Config, Path]],
    console: Console | None = None,
    changes: dict[str, Any] | None = None,
    new_run: bool = False,
    *,
    resume_path: Path,
) -> list[list[dict[str, Any]]]:
    """Run the rounds of one run, or of several replicates of one config in lockstep (see `run`); each run
    keeps its own directory, record and checkpoints. `resume_path` is what the message after a stop names."""
    console = console or Console(quiet=not distributed.is_main())
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
    return results


def _run_rounds(
    members: list[tuple[Config, Path]],
    console: Console,
    changes: dict[str, Any] | None,
    new_run: bool,
    resume_path: Path,
) -> list[OpenRun]:
    """Lock and open every member's run, train their rounds, and record how each ended."""
    lead = members[0][0]
    with contextlib.ExitStack() as held:
        for _, run_dir in members:
            held.enter_context(run_lock(run_dir))
        opened = [_open_run(cfg, run_dir, changes, new_run) for cfg, run_dir in members]
        if len(opened) > 1:
            _share_test_split(opened)
        starts = {member.first for member in opened}
        if len(starts) > 1:  # replicates train each round together, so they must all be at the same one
            raise ValueError(f"runs trained together have finished different rounds: {sorted(starts)}")
        first = starts.pop()
        with StopSignals() as stop, RunDisplay(live=lead.ui.progress, console=console) as display:
            group = [member.rounds(display, stop) for member in opened]
            try:
                for round_index in range(first, lead.prune.rounds + 1):
                    if len(group) == 1:
                        rows = [group[0].run_round(round_index)]
                    else:
                        rows = run_round_together(group, round_index)
                    for member, row in zip(opened, rows, strict=True):
                        update_run_record(member.run_dir, rounds_finished=round_index + 1)
                        display.finish_round(row, label=member.label if len(opened) > 1 else "")
                    distributed.barrier()  # round r is on disk before any rank reads it to prune round r+1
                    if stop.received and round_index < lead.prune.rounds:
                        raise Interrupted(f"stopped after round {round_index}")
            except (Interrupted, KeyboardInterrupt) as stopped:
                for member in opened:
                    update_run_record(member.run_dir, status="interrupted")
                console.print(
                    f"interrupted ({stopped or 'at once'}); finished rounds and the training state are kept. "
                    f"Resume: lth resume {resume_path}",
                    soft_wrap=True,
                )
                raise SystemExit(Interrupted.exit_code) from None
            except Exception:  # divergence, a broken invariant or a crash: the finished rounds stay as they are
                for member in opened:
                    update_run_record(member.run_dir, status="failed")
                raise
        for member in opened:
            update_run_record(member.run_dir, status="finished")
    return opened


@dataclass
class OpenRun:
    """A run directory locked, checked and recorded as running, with its data, model and θ0 (`_open_run`)."""

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


def _open_run(cfg: Config, run_dir: Path, changes: dict[str, Any] | None, new_run: bool) -> OpenRun:
    if new_run and (run_dir / RUN_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with: lth resume {run_dir}")
    record = _check_record(run_dir, cfg, changes)
    device = resolve_device(cfg.device)
    dataset = data.load(cfg.dataset, cfg.seed, device)
    models.check_fits(cfg.model, dataset.input_shape, dataset.num_classes)
    torch.manual_seed(cfg.seed)
    model = models.build(cfg.model, dataset.input_shape, dataset.num_classes).to(device)
    if cfg.train.replicates > 1:
        replicates.check_model(model)
    _check_rewind_point(cfg, dataset)
    borrowed_from = masks_source(cfg) if cfg.prune.masks_from is not None else None
    _check_pruning_targets(cfg, model, borrowed_from)
    first = finished_rounds(run_dir)
    distributed.barrier()  # every rank has looked at the directory before rank 0 writes to it
    if not is_sealed(run_dir, INIT_FILE):
        seal_tensors(run_dir, INIT_FILE, model.state_dict())
    if changes and any(config.decides_results(key) for key in changes):
        clear_states(run_dir)  # a state trained under the old settings must not continue under the new
    event = {"event": "resumed" if record else "started", "time": now()}
    update_run_record(
        run_dir,
        format_version=FORMAT_VERSION,
        status="running",
        config=config.to_container(cfg),
        config_hash=config_hash(cfg),
        device=str(device),
        rounds_planned=cfg.prune.rounds + 1,
        rounds_finished=first,
        versions=_versions(),
        events=[*(record or {}).get("events", []), {**event, **({"changes": changes} if changes else {})}],
    )
    distributed.barrier()  # θ0 is on disk for every rank to read
    init = load_sealed(run_dir, INIT_FILE, str(device))
    return OpenRun(cfg, run_dir, dataset, model, init, borrowed_from, first)


def _share_test_split(opened: list[OpenRun]) -> None:
    """Replicates differ in their train/validation split, never in the test set: one copy serves them all."""
    shared = opened[0].dataset.test
    for member in opened[1:]:
        test = member.dataset.test
        if torch.equal(test.images, shared.images):  # False for other shapes too
            member.dataset = dataclasses.replace(member.dataset, test=shared)


def run_round_together(group: list[Rounds], round_index: int) -> list[dict[str, Any]]:
    """Round r of replicates: each prunes and resets on its own, they train as one batch, each publishes."""
    begun = [rounds.begin_round(round_index) for rounds in group]
    group[0].display_round(begun[0])
    batch = replicates.ReplicateBatch([b.trainer for b in begun])
    results = batch.run(on_progress=group[0].display.step, after_step=[b.after_step for b in begun])
    return [rounds.finish_round(b, result) for rounds, b, result in zip(group, begun, results, strict=True)]


def resume(path: Path, overrides: list[str], force: bool = False, console: Console | None = None) -> None:
    """Continue the run at `path`, or every unfinished run under it (a sweep), applying allowed overrides.

    Every run is checked before any of them continues, so a refused change or a damaged run stops the whole
    command before anything is written.
    """
    console = console or Console(quiet=not distributed.is_main())
    runs = find_runs(path)
    planned = [_plan_resume(run_dir, overrides, force) for run_dir in runs]
    for run_dir, cfg, changes in planned:
        if len(runs) > 1 and not changes and read_run_record(run_dir).get("status") == "finished":
            console.print(f"{run_dir}: finished, skipped", soft_wrap=True)
            continue
        run(cfg, run_dir, console, changes=changes)


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
        changes, refused = _changes(_saved_config(member_dir), member_cfg)
        if refused:
            raise ConfigError(
                f"{member_dir} holds a run of another config ({refused}); give this sweep its own hydra.sweep.dir"
            )
        run(member_cfg, member_dir, console, changes=changes)


def _plan_resume(run_dir: Path, overrides: list[str], force: bool) -> tuple[Path, Config, dict[str, Any]]:
    """The config a run continues with and the keys it changes, after every check that needs no lock."""
    saved = _saved_config(run_dir)
    cfg = config.with_overrides(saved, overrides)
    changes, refused = _changes(saved, cfg)
    if refused and not force:
        raise ConfigError(
            f"resume would change {refused}; only prune.rounds, ui.*, checkpoint.* and logger may change "
            "(add --force to change anyway; it is recorded in run.json)"
        )
    preflight(cfg)
    return run_dir, cfg, changes


def _saved_config(run_dir: Path) -> Config:
    return config.from_container(read_run_record(run_dir).get("config"), run_dir / RUN_FILE)


def _changes(saved: Config, cfg: Config) -> tuple[dict[str, list[Any]], str]:
    """The keys `cfg` changes from a run's saved config ({key: [old, new]}), and those that would change its
    results described for an error message ("" when there are none)."""
    changes = config.changed_keys(saved, cfg)
    refused = [key for key in changes if config.decides_results(key)]
    described = ", ".join(f"{key} ({changes[key][0]} -> {changes[key][1]})" for key in refused)
    return {key: list(change) for key, change in changes.items()}, described


def _check_rewind_point(cfg: Config, dataset: data.Dataset) -> None:
    """A pruned round rewound to step k trains steps k+1..T, so k must come before the end of round 0."""
    per_epoch = steps_per_epoch(len(dataset.train), cfg.train.batch_size)
    total, rewind_step = per_epoch * cfg.train.epochs, to_steps(cfg.prune.rewind_to, per_epoch)
    if rewind_step >= total:
        raise ConfigError(
            f"prune.rewind_to={cfg.prune.rewind_to} is step {rewind_step}, not before the end of a round "
            f"({total} steps: {cfg.train.epochs} epochs of {per_epoch} steps)"
        )


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


@dataclass
class RoundStart:
    """A round ready to train (`Rounds.begin_round`)."""

    round_index: int
    started: float  # perf_counter at the start of the round, pruning included
    masks: Masks
    groups: list[PruneGroup]
    start_state: Weights  # the masked weights training starts from
    checks: dict[str, bool]
    trainer: Trainer
    after_step: Callable[[Trainer], None]  # saves the rewind point and checkpoints; stops on a signal


@dataclass
class Rounds:
    """What every round of one run shares; `run_round` does one round: prune, reset, train, check, publish."""

    cfg: Config
    run_dir: Path
    model: nn.Module
    dataset: data.Dataset
    init: Weights  # θ0, the weights before any training
    display: RunDisplay
    stop: StopSignals
    borrowed_from: Path | None = None  # the run whose masks this one trains (`prune.masks_from`, resolved)

    @property
    def device(self) -> str:
        return str(next(iter(self.init.values())).device)

    def run_round(self, round_index: int) -> dict[str, Any]:
        begun = self.begin_round(round_index)
        self.display_round(begun)
        return self.finish_round(begun, begun.trainer.run(on_progress=self.display.step, after_step=begun.after_step))

    def begin_round(self, round_index: int) -> RoundStart:
        """Everything before round r trains: prune, reset the survivors, check, and the Trainer (its saved state
        loaded when the round was stopped part-way)."""
        cfg, run_dir, model = self.cfg, self.run_dir, self.model
        started = time.perf_counter()
        start = self.start_weights(round_index)
        masks, groups = self.next_masks(round_index, start)
        model.load_state_dict(start)
        apply_masks(model, masks)
        start_state = {name: value.clone() for name, value in model.state_dict().items()}
        round_checks = checks.check_start(model, masks, start)
        checks.require(round_checks, round_index)

        trainer = self.trainer(masks, round_index)
        rewind_step = to_steps(cfg.prune.rewind_to, trainer.steps_per_epoch)
        saved = load_state(run_dir, round_index, warn=lambda message: self.display.console.print(message))
        if saved is not None:
            trainer.load_state_dict(saved)
        else:
            trainer.step = first_step(cfg, round_index, trainer.steps_per_epoch)
        every = to_steps(cfg.checkpoint.every, trainer.steps_per_epoch)
        if round_index == 0 and rewind_step == 0:
            self.save_rewind_point()

        def after_step(trainer: Trainer) -> None:
            if round_index == 0 and trainer.step == rewind_step:
                self.save_rewind_point()
            due = every and trainer.step % every == 0 and trainer.step < trainer.total_steps
            if due or self.stop.received:
                save_state(run_dir, round_index, trainer.step, trainer.state_dict(), cfg.checkpoint.keep)
            if self.stop.received:
                raise Interrupted(f"stopped in round {round_index} at step {trainer.step}")

        return RoundStart(round_index, started, masks, groups, start_state, round_checks, trainer, after_step)

    def display_round(self, begun: RoundStart) -> None:
        trainer = begun.trainer
        self.display.start_round(
            begun.round_index, density(begun.masks), trainer.total_steps, trainer.steps_per_epoch, trainer.step
        )

    def finish_round(self, begun: RoundStart, result: TrainResult) -> dict[str, Any]:
        """Check the trained round, then publish its weights, masks and metrics."""
        run_dir, model, masks, round_index = self.run_dir, self.model, begun.masks, begun.round_index
        round_checks = begun.checks | checks.check_end(model, masks, begun.groups)
        checks.require(round_checks, round_index)
        metrics = {
            "round": round_index,
            "density": density(masks),
            "param_density": parameter_density(model, masks),
            "remaining_weights": sum(int(mask.sum()) for mask in masks.values()),
            "remaining_parameters": remaining_parameters(model, masks),
            "layer_density": layer_densities(masks),
            "collapsed_layers": collapsed_layers(masks),
            **result.metrics(),
            "checks": round_checks,
            "seconds": time.perf_counter() - begun.started,
        }
        final = model.state_dict()
        publish_round(run_dir, round_index, {"mask": masks, "start": begun.start_state, "final": final}, metrics)
        loggers.round_published(run_dir, round_index, self.cfg.logger)
        clear_states(run_dir)
        return metrics

    def trainer(self, masks: Masks, round_index: int) -> Trainer:
        return round_trainer(self.cfg, self.model, masks, self.dataset, round_index, seed=self.cfg.seed)

    def next_masks(self, round_index: int, start: Weights) -> tuple[Masks, list[PruneGroup]]:
        """Round r's masks and the groups they were planned in: round 0 is dense; round r prunes by
        `prune.criterion` from round r-1 (from round 0 when one-shot), or takes the masks of `prune.masks_from`;
        `prune.control` then alters them."""
        prune = self.cfg.prune
        output = output_layer(self.model)
        if round_index == 0:
            masks = dense_masks(self.model)
            return masks, plan_round(masks, output, prune, 0)
        generator = torch.Generator().manual_seed(derive_seed(self.cfg.seed, RANDOM_PRUNING, round_index))
        if self.borrowed_from is not None:
            masks = self.borrowed_masks(self.borrowed_from, round_index)
            groups = [PruneGroup((name,), int(mask.sum())) for name, mask in masks.items()]
        else:
            source = verify_round(self.run_dir, 0 if prune.schedule == "oneshot" else round_index - 1)
            final = load_tensors(source / "final.safetensors", self.device)
            previous = load_tensors(source / "mask.safetensors", self.device)
            groups = plan_round(previous, output, prune, round_index)
            scoring = Scoring(prune, self.model, previous, final, self.init, start, self.dataset, generator)
            masks = scoring.prune(groups, invert=prune.control == "invert")
        if prune.control == "shuffle_layer":
            shuffler = torch.Generator().manual_seed(derive_seed(self.cfg.seed, SHUFFLE, round_index))
            masks = shuffle_within_layers(masks, shuffler)
        return masks, groups

    def borrowed_masks(self, source: Path, round_index: int) -> Masks:
        """The mask of round r (or of `prune.masks_round`) of the run `source` (checked up front)."""
        prune = self.cfg.prune
        source_round = round_index if prune.masks_round is None else prune.masks_round
        return load_tensors(verify_round(source, source_round) / "mask.safetensors", self.device)

    def start_weights(self, round_index: int) -> Weights:
        """What the survivors are reset to before a round trains (`prune.retrain`, then `prune.control`);
        round 0 starts from θ0."""
        if round_index == 0:
            return self.init
        start = self.reset_weights(round_index)
        if self.cfg.prune.control == "signed_constant":
            start = signed_constant(start, self.init, list(prunable_weights(self.model)))
        return start

    def reset_weights(self, round_index: int) -> Weights:
        retrain = self.cfg.prune.retrain
        if retrain == "rewind":
            return load_sealed(self.run_dir, REWIND_FILE, self.device)
        if retrain in ("finetune", "lr_rewind"):
            return load_tensors(verify_round(self.run_dir, round_index - 1) / "final.safetensors", self.device)
        torch.manual_seed(derive_seed(self.cfg.seed, REINIT, round_index))  # a new draw from the init distribution
        fresh = models.build(self.cfg.model, self.dataset.input_shape, self.dataset.num_classes)
        return {name: value.to(self.device) for name, value in fresh.state_dict().items()}

    def save_rewind_point(self) -> None:
        """θk, saved once during round 0 (k = prune.rewind_to) and never rewritten."""
        if not is_sealed(self.run_dir, REWIND_FILE):
            seal_tensors(self.run_dir, REWIND_FILE, self.model.state_dict())


def round_trainer(
    cfg: Config, model: nn.Module, masks: Masks, dataset: data.Dataset, round_index: int, *, seed: int
) -> Trainer:
    """The Trainer of round r as the driver builds it; `seed` draws its data order, augmentation and dropout
    (the run's seed in a run; another one gives the same round different SGD noise, see lth.analyze.lmc).

    Pruned rounds train steps k+1..T (`first_step`); fine-tuning at the schedule's final rate, the others on
    schedule."""
    lr_at = None
    if round_index > 0 and cfg.prune.retrain == "finetune":
        per_epoch = steps_per_epoch(len(dataset.train), cfg.train.batch_size)
        final_lr = lr_schedule(cfg.train, per_epoch)(per_epoch * cfg.train.epochs - 1)

        def lr_at(step: int) -> float:
            return final_lr

    return Trainer(model, masks, dataset, cfg.train, seed=seed, round_index=round_index, lr_at=lr_at)


def first_step(cfg: Config, round_index: int, per_epoch: int) -> int:
    """The step a round's training starts from: retraining goes on from the rewind step k (the schedule and data
    order from there); round 0 and re-initialised rounds start at 0."""
    if round_index > 0 and cfg.prune.retrain != "reinit":
        return to_steps(cfg.prune.rewind_to, per_epoch)
    return 0


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
