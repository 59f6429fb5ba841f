"""The IMP driver: train dense, then round after round prune, rewind the survivors, retrain.

Round 0 trains the dense network from its initialisation θ0 (saved as the rewind point before any step).
Round r > 0 reads round r-1's final weights and mask from disk, removes the planned fraction of survivors by
magnitude, resets the survivors to the rewind point and trains again. Reading the previous round back from
disk on every round means a resumed run and an uninterrupted one take exactly the same path.
"""

from __future__ import annotations

import platform
import signal
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from lth import checks, config, data, models
from lth.checkpoint import (
    FORMAT_VERSION,
    REWIND_FILE,
    RUN_FILE,
    clear_states,
    finished_rounds,
    load_state,
    load_tensors,
    now,
    publish_round,
    read_run_record,
    run_lock,
    save_state,
    save_tensors,
    update_run_record,
    verify_round,
)
from lth.config import Config, config_hash
from lth.errors import ConfigError, Interrupted, RunFailed
from lth.prune import (
    Masks,
    PruneGroup,
    apply_masks,
    criterion_scores,
    dense_masks,
    density,
    layer_densities,
    parameter_density,
    prune_by_score,
    prune_groups,
)
from lth.report import CONFIG_FILE, find_runs, round_table, run_rows
from lth.seeds import RANDOM_PRUNING, REINIT, derive_seed
from lth.train import Trainer, to_steps
from lth.ui import RunDisplay

Weights = dict[str, torch.Tensor]  # a state dict: parameter and buffer name -> tensor
_PACKAGES = ("lth", "torch", "torchvision", "hydra-core", "omegaconf", "numpy", "safetensors")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} is not available on this machine (no CUDA device); use device=auto or cpu")
    return torch.device(name)


def preflight(cfg: Config) -> None:
    """Environment checks that must pass before a run directory is created."""
    resolve_device(cfg.device)
    data.check(cfg.dataset)


def run(
    cfg: Config, run_dir: Path, console: Console | None = None, changes: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run (or continue) the IMP rounds of `cfg` in `run_dir`; return the rows of all finished rounds.

    `changes` are the config keys a resume changed (old, new), recorded in run.json; a run whose results-
    determining config differs from the one it started with is refused unless such changes were allowed.
    """
    console = console or Console()
    with run_lock(run_dir):
        record = _check_record(run_dir, cfg, changes)
        if changes:
            config.save(cfg, run_dir / CONFIG_FILE)
        device = resolve_device(cfg.device)
        dataset = data.load(cfg.dataset, cfg.seed, device)
        torch.manual_seed(cfg.seed)
        model = models.build(cfg.model, dataset.input_shape, dataset.num_classes).to(device)
        rewind_path = run_dir / REWIND_FILE
        if not rewind_path.exists():
            save_tensors(rewind_path, model.state_dict())
        rewind_point = load_tensors(rewind_path, str(device))
        groups = prune_groups(model, cfg.prune)

        first = finished_rounds(run_dir)
        event = {"event": "resumed" if record else "started", "time": now()}
        update_run_record(
            run_dir,
            format_version=FORMAT_VERSION,
            status="running",
            config_hash=config_hash(cfg),
            device=str(device),
            rounds_planned=cfg.prune.rounds + 1,
            rounds_finished=first,
            versions=_versions(),
            events=[*(record or {}).get("events", []), {**event, **({"changes": changes} if changes else {})}],
        )
        with StopSignals() as stop, RunDisplay(live=cfg.ui.progress, console=console) as display:
            try:
                for round_index in range(first, cfg.prune.rounds + 1):
                    row = run_round(cfg, run_dir, round_index, model, dataset, rewind_point, groups, display, stop)
                    update_run_record(run_dir, rounds_finished=round_index + 1)
                    display.finish_round(row)
                    if stop.received and round_index < cfg.prune.rounds:
                        raise Interrupted(f"stopped after round {round_index}")
            except (Interrupted, KeyboardInterrupt) as stopped:
                update_run_record(run_dir, status="interrupted")
                console.print(
                    f"interrupted ({stopped or 'at once'}); finished rounds and the training state are kept. "
                    f"Resume: lth resume {run_dir}",
                    soft_wrap=True,
                )
                raise SystemExit(Interrupted.exit_code) from None
            except RunFailed:
                update_run_record(run_dir, status="failed")
                raise
        update_run_record(run_dir, status="finished")
    rows = run_rows(run_dir)
    console.print(round_table(rows, title=f"{cfg.model.name} on {cfg.dataset.name}, seed {cfg.seed}: {run_dir}"))
    return rows


def resume(path: Path, overrides: list[str], force: bool = False, console: Console | None = None) -> None:
    """Continue the run at `path`, or every unfinished run under it (a sweep), applying allowed overrides."""
    console = console or Console()
    runs = [path] if (path / RUN_FILE).is_file() else find_runs(path)
    for run_dir in runs:
        if not (run_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"{run_dir} is not an lth run directory (it needs {RUN_FILE} and {CONFIG_FILE})")
        saved = config.load_saved(run_dir / CONFIG_FILE)
        cfg = config.with_overrides(saved, overrides)
        changes = config.changed_keys(saved, cfg)
        refused = [key for key in changes if not key.startswith(config.RESUMABLE_KEYS)]
        if refused and not force:
            described = ", ".join(f"{key} ({changes[key][0]} -> {changes[key][1]})" for key in refused)
            raise ConfigError(
                f"resume would change {described}; only prune.rounds, ui.* and checkpoint.* may change "
                "(add --force to change anyway; it is recorded in run.json)"
            )
        if len(runs) > 1 and not changes and read_run_record(run_dir).get("status") == "finished":
            console.print(f"{run_dir}: finished, skipped", soft_wrap=True)
            continue
        preflight(cfg)
        run(cfg, run_dir, console, changes={key: list(change) for key, change in changes.items()})


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
        raise ConfigError(f"{run_dir}/.hydra/config.yaml no longer matches the config this run was started with")
    return record


class StopSignals:
    """Ctrl-C and SIGTERM (cluster pre-emption) ask the run to stop at the next step, after saving its state.

    A second signal stops at once (KeyboardInterrupt). Handlers can only be set from the main thread; a launcher
    that runs jobs in worker threads keeps its own handling.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum


def run_round(
    cfg: Config,
    run_dir: Path,
    round_index: int,
    model: nn.Module,
    dataset: data.Dataset,
    rewind_point: Weights,
    groups: list[PruneGroup],
    display: RunDisplay,
    stop: StopSignals,
) -> dict[str, Any]:
    def fresh_model() -> nn.Module:
        return models.build(cfg.model, dataset.input_shape, dataset.num_classes).to(rewind_point_device)

    rewind_point_device = next(iter(rewind_point.values())).device
    started = time.perf_counter()
    masks = next_masks(cfg, model, run_dir, round_index, groups, rewind_point)
    start = start_weights(cfg, run_dir, round_index, rewind_point, fresh_model)
    model.load_state_dict(start)
    apply_masks(model, masks)
    start_state = {name: value.clone() for name, value in model.state_dict().items()}
    round_checks = checks.check_start(model, masks, start)
    checks.require(round_checks, round_index)

    trainer = Trainer(model, masks, dataset, cfg.train, seed=cfg.seed, round_index=round_index)
    saved = load_state(run_dir, round_index, warn=lambda message: display.console.print(message, soft_wrap=True))
    if saved is not None:
        trainer.load_state_dict(saved)
    every = to_steps(cfg.checkpoint.every, trainer.steps_per_epoch)

    def after_step(trainer: Trainer) -> None:
        due = every and trainer.step % every == 0 and trainer.step < trainer.total_steps
        if due or stop.received:
            save_state(run_dir, round_index, trainer.step, trainer.state_dict(), cfg.checkpoint.keep)
        if stop.received:
            raise Interrupted(f"stopped in round {round_index} at step {trainer.step}")

    display.start_round(round_index, density(masks), trainer.total_steps, trainer.steps_per_epoch, trainer.step)
    result = trainer.run(on_progress=display.step, after_step=after_step)

    round_checks |= checks.check_end(model, masks, groups, round_index)
    checks.require(round_checks, round_index)
    metrics = {
        "round": round_index,
        "density": density(masks),
        "param_density": parameter_density(model, masks),
        "layer_density": layer_densities(masks),
        **result.metrics(),
        "checks": round_checks,
        "seconds": time.perf_counter() - started,
    }
    publish_round(run_dir, round_index, {"mask": masks, "start": start_state, "final": model.state_dict()}, metrics)
    clear_states(run_dir)
    return metrics


def next_masks(
    cfg: Config, model: nn.Module, run_dir: Path, round_index: int, groups: list[PruneGroup], init: Weights
) -> Masks:
    """Round 0 is dense; round r prunes round r-1's survivors by `prune.criterion` on its final weights."""
    if round_index == 0:
        return dense_masks(model)
    device = str(next(iter(init.values())).device)
    previous = verify_round(run_dir, round_index - 1)
    masks = load_tensors(previous / "mask.safetensors", device)
    final = load_tensors(previous / "final.safetensors", device)
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, RANDOM_PRUNING, round_index))
    scores = criterion_scores(cfg.prune.criterion, final, init, masks, generator)
    return prune_by_score(scores, masks, groups, round_index)


def start_weights(
    cfg: Config, run_dir: Path, round_index: int, rewind_point: Weights, fresh_model: Callable[[], nn.Module]
) -> Weights:
    """What the survivors are reset to before a round trains (`prune.retrain`); round 0 starts from θ0."""
    if round_index == 0 or cfg.prune.retrain == "rewind":
        return rewind_point
    if cfg.prune.retrain == "finetune":
        device = str(next(iter(rewind_point.values())).device)
        return load_tensors(verify_round(run_dir, round_index - 1) / "final.safetensors", device)
    torch.manual_seed(derive_seed(cfg.seed, REINIT, round_index))  # reinit: a new draw from the init distribution
    return fresh_model().state_dict()


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
