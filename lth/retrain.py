"""Retrain rules (`prune.retrain`): what the survivors are reset to before a pruned round trains, the step it
starts from, and its learning rate. Adding one is one registered function here (its name joins
`lth.schema.RETRAIN`, which a test keeps equal to this registry).

- `rewind`: to θk, going on from step k with the schedule (Frankle & Carbin 2019; Frankle et al. 2020);
- `lr_rewind`: the trained weights, the schedule rewound to step k (Renda et al. 2020);
- `finetune`: the trained weights at the schedule's final rate (Renda et al.'s baseline);
- `reinit`: a new draw from the initialisation distribution, from step 0 (the random-reinit control).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth import data, models
from lth.checkpoint import REWIND_FILE, load_sealed, load_tensors, verify_round
from lth.prune import Masks
from lth.schema import Config
from lth.seeds import REINIT, derive_seed
from lth.train import Trainer, lr_schedule, steps_per_epoch, to_steps

Weights = dict[str, torch.Tensor]
# (cfg, run dir, dataset, round r, device) -> the weights round r's survivors start from
Reset = Callable[[Config, Path, data.Dataset, int, str], Weights]


@dataclass(frozen=True)
class RetrainRule:
    reset: Reset
    from_rewind_step: bool  # the round trains steps k+1..T (else 0..T)
    final_lr: bool  # the whole round at the schedule's final learning rate


RULES: dict[str, RetrainRule] = {}


def register(name: str, *, from_rewind_step: bool = True, final_lr: bool = False) -> Callable[[Reset], Reset]:
    """Add a retrain rule under `prune.retrain=<name>`."""

    def add(reset: Reset) -> Reset:
        RULES[name] = RetrainRule(reset, from_rewind_step, final_lr)
        return reset

    return add


@register("rewind")
def rewind(cfg: Config, run_dir: Path, dataset: data.Dataset, round_index: int, device: str) -> Weights:
    return load_sealed(run_dir, REWIND_FILE, device)


@register("lr_rewind")
def trained(cfg: Config, run_dir: Path, dataset: data.Dataset, round_index: int, device: str) -> Weights:
    return load_tensors(verify_round(run_dir, round_index - 1) / "final.safetensors", device)


register("finetune", final_lr=True)(trained)


@register("reinit", from_rewind_step=False)
def reinit(cfg: Config, run_dir: Path, dataset: data.Dataset, round_index: int, device: str) -> Weights:
    torch.manual_seed(derive_seed(cfg.seed, REINIT, round_index))  # a new draw from the init distribution
    fresh = models.build(cfg.model, dataset.input_shape, dataset.num_classes)
    return {name: value.to(device) for name, value in fresh.state_dict().items()}


def rule(cfg: Config) -> RetrainRule:
    return RULES[cfg.prune.retrain]


def round_trainer(
    cfg: Config, model: nn.Module, masks: Masks, dataset: data.Dataset, round_index: int, *, seed: int
) -> Trainer:
    """The Trainer of round r as the driver builds it; `seed` draws its data order, augmentation and dropout
    (the run's seed in a run; another one gives the same round different SGD noise, see lth.analyze.lmc).

    Pruned rounds train steps k+1..T (`first_step`); fine-tuning at the schedule's final rate, the others on
    schedule."""
    lr_at = None
    if round_index > 0 and rule(cfg).final_lr:
        per_epoch = steps_per_epoch(len(dataset.train), cfg.train.batch_size)
        final_lr = lr_schedule(cfg.train, per_epoch)(per_epoch * cfg.train.epochs - 1)

        def lr_at(step: int) -> float:
            return final_lr

    return Trainer(model, masks, dataset, cfg.train, seed=seed, round_index=round_index, lr_at=lr_at)


def first_step(cfg: Config, round_index: int, per_epoch: int) -> int:
    """The step a round's training starts from: retraining goes on from the rewind step k (the schedule and data
    order from there); round 0 and re-initialised rounds start at 0."""
    if round_index > 0 and rule(cfg).from_rewind_step:
        return to_steps(cfg.prune.rewind_to, per_epoch)
    return 0
