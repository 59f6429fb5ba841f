"""Every refusal before training, in three stages, so that bad input exits 2 and leaves nothing on disk.

1. config: the composed config checks its own keys (`lth.schema`'s groups, `lth.structured.validate`), before
   this module is reached;
2. environment (`environment`): the device, the data files, the run `prune.masks_from` names; before any run
   directory is made (`lth run` checks every job of a sweep this way first);
3. built model (`model_fits`, `built_model`): what needs the data's shapes and the model: the model fits the data,
   replicates can be batched, the rewind point comes before the end of round 0, `prune.ignore` patterns,
   borrowed masks and `prune.structure` fit the model; before round 0 trains.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lth import data, models, replicates, structures
from lth.checkpoint import RUN_FILE, SWEEP_FILE, find_runs, finished_rounds, load_tensors, read_run_record, verify_round
from lth.errors import ConfigError
from lth.models import prunable_weights
from lth.schema import Config, refuse
from lth.structured import from_container, round0_config
from lth.train import steps_per_epoch, to_steps


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} is not available on this machine (no CUDA device); use device=auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device={name} does not exist; this machine has {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


def environment(cfg: Config) -> None:
    """Stage 2: environment checks that must pass before a run directory is created."""
    resolve_device(cfg.device)
    data.check(cfg.dataset)
    if cfg.prune.masks_from is not None:
        _check_masks_source(cfg)
    round0_source(cfg)  # a named round 0 that cannot stand for this run's is refused before any directory


def no_run_in(run_dir: Path) -> None:
    """`lth run` starts a new run: `run_dir` must not hold one already (or a replicate group's runs)."""
    if (run_dir / RUN_FILE).exists() or any(run_dir.glob(f"seed_*/{RUN_FILE}")):
        raise ConfigError(f"{run_dir} already holds a run; continue it with: lth resume {run_dir}")


def sweep_jobs(jobs: list[Config]) -> None:
    """Every job of a sweep against its data's size (validation split, subset, rewind point, warm-up), before the
    first job starts: a bad value in job 7 must not wait for jobs 0-6 to train. Each distinct dataset is read once."""
    available: dict[str, int] = {}
    for cfg in jobs:
        key = json.dumps({k: v for k, v in asdict(cfg.dataset).items() if k not in ("val_size", "subset")})
        if key not in available:
            available[key] = data.available_examples(cfg.dataset)
        _check_durations(cfg, data.training_examples(cfg.dataset, available[key]))


def model_fits(cfg: Config, dataset: data.Dataset) -> None:
    """Stage 3, before the model is built: its input and output fit the data (built on the meta device)."""
    models.check_fits(cfg.model, dataset.input_shape, dataset.num_classes)


def advice(cfg: Config, dataset: data.Dataset) -> list[str]:
    """What will run but not as a researcher may expect: one line each, printed when the run starts."""
    lines = []
    epoch = steps_per_epoch(len(dataset.train), cfg.train.batch_size)
    steps, interval = epoch * cfg.train.epochs, cfg.train.eval_every or epoch
    if dataset.val is not None and interval >= steps:
        key = f"train.eval_every={cfg.train.eval_every}" if cfg.train.eval_every else "train.eval_every=0 (each epoch)"
        lines.append(
            f"warning: {key} evaluates once in a round of {steps} steps, so early stopping cannot choose: every "
            f"round's early-stop step is its last; set train.eval_every below {steps}"
        )
    warmup_steps = to_steps(cfg.train.warmup, epoch)
    if warmup_steps > steps:  # a recipe's warm-up in a run made shorter (train.epochs=1 for a smoke test)
        lines.append(
            f"warning: train.warmup={cfg.train.warmup} is {warmup_steps} steps, longer than a round ({steps} "
            f"steps), so the learning rate never reaches train.lr={cfg.train.lr:g}; choose at most {steps}it"
        )
    if cfg.prune.retrain == "lr_rewind" and cfg.train.lr_schedule == "constant":
        lines.append(
            "note: prune.retrain=lr_rewind on train.lr_schedule=constant replays a constant rate: it is "
            "fine-tuning (prune.retrain=finetune); LR rewinding differs only on a decaying schedule"
        )
    return lines


def built_model(cfg: Config, model: nn.Module, dataset: data.Dataset) -> Path | None:
    """Stage 3: checks of the model built on its data, before round 0 trains; returns the run whose masks this
    one borrows (`prune.masks_from`, resolved), if any."""
    if cfg.train.replicates > 1:
        replicates.check_model(model)
    _check_durations(cfg, len(dataset.train))
    borrowed_from = masks_source(cfg) if cfg.prune.masks_from is not None else None
    _check_pruning_targets(cfg, model, borrowed_from)
    structures.check_model(model, cfg.prune)
    return borrowed_from


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


def round0_source(cfg: Config) -> Path | None:
    """The run whose finished round 0 this run takes instead of training it again: `prune.round0_from` (refused
    unless its round 0 was trained under the same round-0 config), else the run `prune.masks_from` names when its
    round 0 was (a control's dense round is its ticket's). Sparse-from-the-start methods have no dense round 0."""
    from lth.prune import SCHEDULES

    if SCHEDULES[cfg.prune.schedule].from_start:
        if cfg.prune.round0_from is not None:
            refuse("prune.round0_from", cfg.prune.round0_from, f"null for prune.schedule={cfg.prune.schedule}")
        return None
    named = cfg.prune.round0_from
    if named is None:
        source = masks_source(cfg) if cfg.prune.masks_from is not None else None
        return source if source is not None and not _round0_differences(cfg, source) else None
    source, key = Path(named), f"prune.round0_from={named}"
    if not (source / RUN_FILE).is_file() or finished_rounds(source) < 1:
        raise ConfigError(f"{key}: not a run with a finished round 0 (no {RUN_FILE} and round_00 there)")
    differences = _round0_differences(cfg, source)
    if differences:
        raise ConfigError(f"{key}: its round 0 was trained otherwise ({differences}); it cannot stand for this one's")
    return source


def sweep_round0(cfg: Config, run_dir: Path) -> Path | None:
    """Another job of this run's sweep whose finished round 0 was trained under this run's round-0 config: a
    one-shot sweep over five target densities trains one dense network, not five. Jobs that run at the same time
    each train their own (only a finished round 0 can be taken). None outside a sweep and for sparse starts."""
    from lth.prune import SCHEDULES

    sweep_dir = next((d for d in run_dir.absolute().parents[:2] if (d / SWEEP_FILE).is_file()), None)
    if sweep_dir is None or SCHEDULES[cfg.prune.schedule].from_start:
        return None
    for job in sorted(p.parent for p in sweep_dir.rglob(RUN_FILE)):
        if job.absolute() != run_dir.absolute() and finished_rounds(job) >= 1:
            try:
                if not _round0_differences(cfg, job):
                    return job
            except ConfigError:  # a damaged neighbour is its own job's problem, not this one's
                continue
    return None


def _round0_differences(cfg: Config, source: Path) -> str:
    """The round-0 keys on which `cfg` and the run at `source` differ ("" when none)."""
    theirs = round0_config(from_container(read_run_record(source).get("config"), source / RUN_FILE))
    ours = round0_config(cfg)
    return ", ".join(f"{k} ({theirs.get(k)} there, {ours.get(k)} here)" for k in sorted(ours.keys() | theirs.keys())
                     if ours.get(k) != theirs.get(k))  # fmt: skip


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


def _check_durations(cfg: Config, train_examples: int) -> None:
    """A pruned round rewound to step k trains steps k+1..T, so k must come before the end of round 0."""
    per_epoch = steps_per_epoch(train_examples, cfg.train.batch_size)
    total, rewind_step = per_epoch * cfg.train.epochs, to_steps(cfg.prune.rewind_to, per_epoch)
    if rewind_step >= total:
        raise ConfigError(
            f"prune.rewind_to={cfg.prune.rewind_to} is step {rewind_step}, not before the end of a round "
            f"({total} steps: {cfg.train.epochs} epochs of {per_epoch} steps)"
        )


def _check_pruning_targets(cfg: Config, model: nn.Module, source: Path | None) -> None:
    """Every `prune.ignore` pattern names a layer, and the masks borrowed from `source` (the run
    `prune.masks_from` names) fit the model and have its `prune.structure`, before round 0 trains."""
    names = list(prunable_weights(model))
    for pattern in cfg.prune.ignore:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ConfigError(
                f"prune.ignore pattern {pattern!r} matches no prunable weight of model={cfg.model.name}; "
                f"its prunable weights: {', '.join(names)}"
            )
    ignored = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in cfg.prune.ignore)]
    if cfg.prune.rounds > 0 and len(ignored) == len(names):
        raise ConfigError(
            f"prune.ignore={list(cfg.prune.ignore)} leaves no prunable weight of model={cfg.model.name} to prune "
            f"(its prunable weights: {', '.join(names)}); ignore fewer layers, or set prune.rounds=0 to train "
            "the dense network only"
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
        broken = [name for name, held in structures.check(model, masks, [], cfg.prune, round_index).items() if not held]
        if broken:
            raise ConfigError(
                f"prune.masks_from={source}: its round {round_index} masks do not have prune.structure="
                f"{cfg.prune.structure} ({', '.join(broken)} fails); set prune.structure to the source run's"
            )
