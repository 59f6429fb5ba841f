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
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from lth import checks, data, models
from lth.checkpoint import (
    REWIND_FILE,
    finished_rounds,
    load_tensors,
    now,
    publish_round,
    read_json,
    round_dir,
    save_tensors,
    update_run_record,
)
from lth.config import Config, config_hash
from lth.errors import ConfigError, RunFailed
from lth.prune import (
    Masks,
    PruneGroup,
    apply_masks,
    dense_masks,
    density,
    layer_densities,
    magnitude_prune,
    parameter_density,
    prune_groups,
)
from lth.report import round_table, run_rows
from lth.train import steps_per_epoch, train
from lth.ui import RunDisplay

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


def run(cfg: Config, run_dir: Path, console: Console | None = None) -> list[dict[str, Any]]:
    """Run (or continue) the IMP rounds of `cfg` in `run_dir`; return the rows of all finished rounds."""
    console = console or Console()
    record_path = run_dir / "run.json"
    if record_path.exists() and read_json(record_path).get("config_hash") != config_hash(cfg):
        raise ConfigError(f"{run_dir}/.hydra/config.yaml no longer matches the config this run was started with")
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
    update_run_record(
        run_dir,
        status="running",
        config_hash=config_hash(cfg),
        device=str(device),
        rounds_planned=cfg.prune.rounds + 1,
        rounds_finished=first,
        versions=_versions(),
        **({"started": now()} if first == 0 and not record_path.exists() else {"resumed": now()}),
    )
    # SIGTERM (cluster pre-emption) is handled like Ctrl-C. Signal handlers can only be set from the main
    # thread; a launcher that runs jobs in worker threads keeps its own handling.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main_thread else None
    try:
        with RunDisplay(live=cfg.ui.progress, console=console) as display:
            for round_index in range(first, cfg.prune.rounds + 1):
                row = run_round(cfg, run_dir, round_index, model, dataset, rewind_point, groups, display)
                update_run_record(run_dir, rounds_finished=round_index + 1)
                display.finish_round(row)
    except KeyboardInterrupt:
        update_run_record(run_dir, status="interrupted")
        console.print(f"interrupted; finished rounds are kept. Continue with: lth resume {run_dir}", soft_wrap=True)
        raise SystemExit(130) from None
    except RunFailed:
        update_run_record(run_dir, status="failed")
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
    update_run_record(run_dir, status="finished")
    rows = run_rows(run_dir)
    console.print(round_table(rows, title=f"{cfg.model.name} on {cfg.dataset.name}, seed {cfg.seed}: {run_dir}"))
    return rows


def run_round(
    cfg: Config,
    run_dir: Path,
    round_index: int,
    model: nn.Module,
    dataset: data.Dataset,
    rewind_point: dict[str, torch.Tensor],
    groups: list[PruneGroup],
    display: RunDisplay,
) -> dict[str, Any]:
    started = time.perf_counter()
    masks = next_masks(model, run_dir, round_index, groups, rewind_point)
    model.load_state_dict(rewind_point)
    apply_masks(model, masks)
    start_state = {name: value.clone() for name, value in model.state_dict().items()}
    round_checks = checks.check_start(model, masks, rewind_point)
    checks.require(round_checks, round_index)

    per_epoch = steps_per_epoch(len(dataset.train), cfg.train.batch_size)
    display.start_round(round_index, density(masks), per_epoch * cfg.train.epochs, per_epoch)
    result = train(model, masks, dataset, cfg.train, seed=cfg.seed, round_index=round_index, on_progress=display.step)

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
    return metrics


def next_masks(
    model: nn.Module, run_dir: Path, round_index: int, groups: list[PruneGroup], rewind_point: dict[str, torch.Tensor]
) -> Masks:
    """Round 0 is dense; round r prunes round r-1's survivors by the magnitude of their final weights."""
    if round_index == 0:
        return dense_masks(model)
    device = str(next(iter(rewind_point.values())).device)
    previous = round_dir(run_dir, round_index - 1)
    return magnitude_prune(
        load_tensors(previous / "final.safetensors", device),
        load_tensors(previous / "mask.safetensors", device),
        groups,
        round_index,
    )


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
