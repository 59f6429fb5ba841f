"""Iterative magnitude pruning, one round at a time: prune, reset the survivors, train, check, publish.

Round 0 trains the dense network from its initialisation θ0 and saves the rewind point θk on the way (k =
`prune.rewind_to`, 0 by default). Round r > 0 reads round r-1's final weights and mask from disk, removes the
planned fraction of survivors by `prune.criterion`, resets the survivors (`prune.retrain`: to θk, going on
from step k) and trains again. Reading the previous round back from disk on every round means a resumed run
and an uninterrupted one take exactly the same path. The methods come from registries: schedules
(`lth.prune.SCHEDULES`), criteria (`lth.criteria.CRITERIA`), retrain rules (`lth.retrain.RULES`) and mask
controls (`lth.controls.CONTROLS`). Opening runs, the round loop and signals are `lth.runs`' job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth import checks, compact, data, dst, early_ticket, loggers, preflight, replicates, retrain, structures
from lth.checkpoint import (
    CHECKSUM_FILE,
    INIT_FILE,
    REWIND_FILE,
    clear_states,
    is_sealed,
    load_sealed,
    load_state,
    load_tensors,
    publish_round,
    read_json,
    save_state,
    seal_tensors,
    verify_round,
)
from lth.controls import CONTROLS
from lth.criteria import Scoring
from lth.errors import ConfigError, Interrupted
from lth.models import output_layer, prunable_weights
from lth.prune import (
    SCHEDULES,
    Masks,
    PruneGroup,
    apply_masks,
    collapsed_layers,
    dense_masks,
    density,
    layer_densities,
    parameter_density,
    remaining_parameters,
)
from lth.schema import Config
from lth.seeds import RANDOM_PRUNING, SHUFFLE, derive_seed
from lth.signals import StopSignals
from lth.tasks import TASKS
from lth.train import Trainer, TrainResult, to_steps
from lth.ui import RunDisplay

Weights = dict[str, torch.Tensor]  # a state dict: parameter and buffer name -> tensor


@dataclass
class StepHooks:
    """What happens after each training step of round r, in this order, as named hooks (the Trainer calls it)."""

    rounds: Rounds
    round_index: int
    rewind_step: int  # k, the step whose weights round 0 seals as θk
    every: int  # steps between saved training states (0: none)
    masks_update: dst.MaskUpdater | None = None  # SET and RigL: the round's mask updates
    ticket: early_ticket.EarlyTicket | None = None  # prune.early_ticket: how the next round's mask settles
    stream: loggers.RoundStream | None = None  # logger=tensorboard|mlflow|wandb: the round's live scalars

    def __call__(self, trainer: Trainer) -> None:
        self.rewind_point(trainer)
        self.update_masks(trainer)
        self.watch_ticket(trainer)
        self.stream_evaluation(trainer)
        self.checkpoint(trainer)
        self.stop(trainer)

    def update_masks(self, trainer: Trainer) -> None:
        if self.masks_update is not None and self.masks_update.due(trainer):
            self.masks_update.update(trainer)

    def watch_ticket(self, trainer: Trainer) -> None:
        if self.ticket is not None and trainer.history and trainer.history[-1].step == trainer.step:
            self.ticket.after_evaluation(trainer)

    def stream_evaluation(self, trainer: Trainer) -> None:
        if self.stream is not None and trainer.history and trainer.history[-1].step == trainer.step:
            self.stream.evaluation(trainer.history[-1])

    def state_dict(self) -> dict[str, Any]:
        """What the hooks add to a saved training state: the current mask and its updates, the last ticket mask."""
        state: dict[str, Any] = {}
        if self.masks_update is not None:
            state["masks_update"] = self.masks_update.state_dict()
        if self.ticket is not None:
            state["early_ticket"] = self.ticket.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], trainer: Trainer) -> None:
        if self.masks_update is not None:
            self.masks_update.load_state_dict(state["masks_update"], trainer)
        if self.ticket is not None:
            self.ticket.load_state_dict(state["early_ticket"])

    def metrics(self, result: TrainResult) -> dict[str, Any]:
        """What metrics.json records of the hooks: the mask updates and the early-ticket step."""
        metrics: dict[str, Any] = {}
        if self.masks_update is not None:
            metrics["mask_updates"] = self.masks_update.history
        if self.ticket is not None and self.round_index == 0:
            metrics["early_ticket_step"] = result.steps if result.end_reason == "early_ticket" else None
        return metrics

    def rewind_point(self, trainer: Trainer) -> None:
        if self.round_index == 0 and trainer.step == self.rewind_step:
            self.rounds.save_rewind_point()

    def checkpoint(self, trainer: Trainer) -> None:
        """The training state every `checkpoint.every` steps (not at the end: the round is published then), and
        when a stop was asked for."""
        due = self.every and trainer.step % self.every == 0 and trainer.step < trainer.total_steps
        if due or self.rounds.stop.received:
            cfg = self.rounds.cfg
            state = trainer.state_dict() | self.state_dict()
            save_state(self.rounds.run_dir, self.round_index, trainer.step, state, cfg.checkpoint.keep)

    def stop(self, trainer: Trainer) -> None:
        if self.rounds.stop.received:
            raise Interrupted(f"stopped in round {self.round_index} at step {trainer.step}")


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
    after_step: StepHooks  # saves the rewind point and checkpoints; stops on a signal


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
        source = self.round0_source(round_index)
        if source is not None:
            return self.take_round0(source)
        begun = self.begin_round(round_index)
        self.display_round(begun)
        with self.live_stream(begun) as stream:

            def progress(step: int, loss: float, accuracy: float) -> None:
                self.display.step(step, loss, accuracy)
                if stream is not None:
                    stream.train(step, loss, accuracy)

            result = begun.trainer.run(on_progress=progress, after_step=begun.after_step)
        return self.finish_round(begun, result)

    @contextmanager
    def live_stream(self, begun: RoundStart) -> Iterator[loggers.RoundStream | None]:
        """Round r's live scalars for the run's tracker (logger=tensorboard|mlflow|wandb; None for the others),
        fed evaluations by the step hooks, closed when training ends, stopped or not."""
        stream = begun.after_step.stream = loggers.live_stream(self.cfg.logger, self.run_dir, begun.round_index)
        try:
            yield stream
        finally:
            if stream is not None:
                stream.close()

    def round0_source(self, round_index: int) -> Path | None:
        """The run whose round 0 this one takes (`preflight.round0_source`, else a finished job of its sweep:
        `preflight.sweep_round0`), when round 0 is what comes next and that run's θ0 is this run's; a named run
        with another θ0 is refused."""
        if round_index != 0:
            return None
        source = preflight.round0_source(self.cfg) or preflight.sweep_round0(self.cfg, self.run_dir)
        if source is None:
            return None
        theirs = load_sealed(source, INIT_FILE, self.device)
        if theirs.keys() == self.init.keys() and all(torch.equal(theirs[k], self.init[k]) for k in theirs):
            return source
        if self.cfg.prune.round0_from is not None:
            raise ConfigError(f"prune.round0_from={source}: its θ0 (init.safetensors) is not this run's")
        return None

    def take_round0(self, source: Path) -> dict[str, Any]:
        """Round 0 as `source` trained it: the same θ0, data and recipe train the same round, so its files are
        verified against their checksums and published as this run's (θk too), and the proof is recorded."""
        folder = verify_round(source, 0)
        tensors = {
            stem: load_tensors(folder / f"{stem}.safetensors", self.device) for stem in ("mask", "start", "final")
        }
        metrics = {**read_json(folder / "metrics.json"), "taken_from": {
            "run": str(source.resolve()), "checksums": read_json(folder / CHECKSUM_FILE)
        }}  # fmt: skip
        if not is_sealed(self.run_dir, REWIND_FILE):
            seal_tensors(self.run_dir, REWIND_FILE, load_sealed(source, REWIND_FILE, self.device))
        publish_round(self.run_dir, 0, tensors, metrics)
        self.model.load_state_dict(tensors["final"])
        loggers.round_published(self.run_dir, 0, self.cfg.logger)
        clear_states(self.run_dir)
        self.display.console.print(
            f"round 0 taken from {source}: the same θ0, data and recipe (checksums verified), not trained again",
            soft_wrap=True,
        )
        return metrics

    def begin_round(self, round_index: int) -> RoundStart:
        """Everything before round r trains: prune, reset the survivors, check, and the Trainer (its saved state
        loaded when the round was stopped part-way)."""
        cfg, model = self.cfg, self.model
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
        hooks = StepHooks(
            self,
            round_index,
            rewind_step=rewind_step,
            every=to_steps(cfg.checkpoint.every, trainer.steps_per_epoch),
            masks_update=dst.updater(cfg.prune, masks, cfg.seed, round_index),
            ticket=early_ticket.watch(cfg.prune, masks, output_layer(model), round_index, rewind_step),
        )
        saved = load_state(self.run_dir, round_index, warn=lambda message: self.display.console.print(message))
        if saved is not None:
            trainer.load_state_dict(saved)
            hooks.load_state_dict(saved, trainer)
        else:
            trainer.step = retrain.first_step(cfg, round_index, trainer.steps_per_epoch)
        if round_index == 0 and hooks.rewind_step == 0:
            self.save_rewind_point()
        return RoundStart(round_index, started, masks, groups, start_state, round_checks, trainer, hooks)

    def display_round(self, begun: RoundStart) -> None:
        trainer = begun.trainer
        self.display.start_round(
            begun.round_index, density(begun.masks), trainer.total_steps, trainer.steps_per_epoch, trainer.step
        )

    def finish_round(self, begun: RoundStart, result: TrainResult) -> dict[str, Any]:
        """Check the trained round, then publish its weights, masks and metrics."""
        run_dir, model, masks, round_index = self.run_dir, self.model, begun.masks, begun.round_index
        round_checks = begun.checks | checks.check_end(model, masks, begun.groups, self.cfg.prune, round_index)
        if begun.after_step.masks_update is not None:
            round_checks |= begun.after_step.masks_update.checks
        checks.require(round_checks, round_index)
        trained = result.metrics()
        metrics = {
            "round": round_index,
            "density": density(masks),
            "param_density": parameter_density(model, masks),
            "remaining_weights": sum(int(mask.sum()) for mask in masks.values()),
            "remaining_parameters": remaining_parameters(model, masks),
            "layer_density": layer_densities(masks),
            "collapsed_layers": collapsed_layers(masks),
            "dead_units": compact.model_dead_units(model, masks),  # per layer; what compaction removes for free
            **trained,
            **TASKS[self.dataset.task].round_metrics(trained),  # a language model's bits per character
            "task": self.dataset.task,
            **begun.after_step.metrics(result),
            "checks": round_checks,
            "seconds": time.perf_counter() - begun.started,
        }
        final = model.state_dict()
        publish_round(run_dir, round_index, {"mask": masks, "start": begun.start_state, "final": final}, metrics)
        loggers.round_published(run_dir, round_index, self.cfg.logger)
        clear_states(run_dir)
        return metrics

    def trainer(self, masks: Masks, round_index: int) -> Trainer:
        return retrain.round_trainer(self.cfg, self.model, masks, self.dataset, round_index, seed=self.cfg.seed)

    def next_masks(self, round_index: int, start: Weights) -> tuple[Masks, list[PruneGroup]]:
        """Round r's masks and the groups they were planned in: round 0 is dense (the sparse round of static, SET
        and RigL draws its mask at random, lth.dst; a round before it is dense); round r prunes by
        `prune.criterion` from the round `prune.schedule` names (r-1, or 0 when one-shot), or takes the masks of
        `prune.masks_from`; `prune.control` then alters them."""
        prune = self.cfg.prune
        control = CONTROLS[prune.control]
        generator = torch.Generator().manual_seed(derive_seed(self.cfg.seed, RANDOM_PRUNING, round_index))
        if round_index == 0 or SCHEDULES[prune.schedule].from_start:
            masks = dense_masks(self.model)
            groups = structures.plan(self.model, masks, prune, round_index)  # in the units of prune.structure
            if round_index == prune.rounds and SCHEDULES[prune.schedule].from_start:  # static, SET, RigL
                masks = dst.initial_masks(masks, groups, generator, prune.min_layer_density)
            return masks, groups
        if self.borrowed_from is not None:
            masks = self.borrowed_masks(self.borrowed_from, round_index)
            counted = structures.counted(masks, structures.unit_sets(self.model, prune))
            groups = [PruneGroup((name,), int(mask.sum())) for name, mask in counted.items()]
        else:
            source = verify_round(self.run_dir, SCHEDULES[prune.schedule].pruned_from(round_index))
            final = load_tensors(source / "final.safetensors", self.device)
            previous = load_tensors(source / "mask.safetensors", self.device)
            scoring = Scoring(prune, self.model, previous, final, self.init, start, self.dataset, generator)
            masks, groups = structures.prune(scoring, round_index, invert=control.invert)
        if control.masks is not None:
            shuffler = torch.Generator().manual_seed(derive_seed(self.cfg.seed, SHUFFLE, round_index))
            masks = control.masks(masks, shuffler)
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
        start = retrain.rule(self.cfg).reset(self.cfg, self.run_dir, self.dataset, round_index, self.device)
        control = CONTROLS[self.cfg.prune.control]
        if control.start is not None:
            start = control.start(start, self.init, list(prunable_weights(self.model)))
        return start

    def save_rewind_point(self) -> None:
        """θk, saved once during round 0 (k = prune.rewind_to) and never rewritten."""
        if not is_sealed(self.run_dir, REWIND_FILE):
            seal_tensors(self.run_dir, REWIND_FILE, self.model.state_dict())


def round_together(group: list[Rounds], round_index: int) -> list[dict[str, Any]]:
    """Round r of replicates: each prunes and resets on its own, they train as one batch, each publishes."""
    sources = [rounds.round0_source(round_index) for rounds in group]
    if all(source is not None for source in sources):  # replicates take their round 0 each from its own seed's run
        return [rounds.take_round0(source) for rounds, source in zip(group, sources, strict=True) if source]
    begun = [rounds.begin_round(round_index) for rounds in group]
    group[0].display_round(begun[0])
    batch = replicates.ReplicateBatch([b.trainer for b in begun])
    with ExitStack() as open_streams:  # each replicate streams to its own tracker
        streams = [open_streams.enter_context(r.live_stream(b)) for r, b in zip(group, begun, strict=True)]
        results = batch.run(
            on_progress=group[0].display.step,
            after_step=[b.after_step for b in begun],
            each_progress=[stream.train if stream is not None else None for stream in streams],
        )
    return [rounds.finish_round(b, result) for rounds, b, result in zip(group, begun, results, strict=True)]
