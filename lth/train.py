"""One training run of a masked network: optimiser, data order, periodic evaluation, early-stop tracking.

Pruned weights stay exactly zero because their gradients are masked before every optimiser step: they start
at zero, their gradient is zero, so SGD's momentum and Adam's moments for them stay zero and so does every
update (weight decay of a zero weight is zero too). The end-of-round checks in `lth.checks` prove it.

The data order of each epoch is drawn from a generator seeded by (seed, round, epoch), so it can be
recomputed from the step count alone: a mid-round resume needs no sampler state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.config import TrainConfig
from lth.data import Dataset, Split
from lth.errors import RunFailed
from lth.models import prunable_weights
from lth.prune import Masks

EVAL_BATCH_SIZE = 2048
PROGRESS_EVERY = 20  # steps between progress callbacks: frequent enough to watch, rare enough to be free

# step, running train loss, running train accuracy; called every PROGRESS_EVERY steps and at epoch ends
ProgressCallback = Callable[[int, float, float], None]


@dataclass
class Evaluation:
    step: int
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float
    test_accuracy: float


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final: Evaluation
    early_stop: Evaluation | None  # the evaluation with the lowest validation loss
    best_test_accuracy: float
    history: list[Evaluation] = field(default_factory=list)

    def metrics(self) -> dict:
        return {
            "steps": self.steps,
            "train_seconds": self.seconds,
            "test_accuracy": self.final.test_accuracy,
            "test_loss": self.final.test_loss,
            "best_test_accuracy": self.best_test_accuracy,
            "early_stop_step": self.early_stop.step if self.early_stop else None,
            "early_stop_val_loss": self.early_stop.val_loss if self.early_stop else None,
            "early_stop_test_accuracy": self.early_stop.test_accuracy if self.early_stop else None,
            "history": [asdict(e) for e in self.history],
        }


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers such as (seed, round, epoch)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Fused kernels: one pass over all parameters per step; on the CPU Adam's step costs ~3x less than foreach.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True
    )


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return math.ceil(train_size / batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split."""
    model.eval()
    loss_sum = torch.zeros((), device=split.y.device)
    correct = torch.zeros((), device=split.y.device, dtype=torch.long)
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        logits = model(split.x[start : start + EVAL_BATCH_SIZE])
        labels = split.y[start : start + EVAL_BATCH_SIZE]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train()
    return loss_sum.item() / len(split), correct.item() / len(split)


def train(
    model: nn.Module,
    masks: Masks,
    data: Dataset,
    cfg: TrainConfig,
    *,
    seed: int,
    round_index: int,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train `model` under `masks` for cfg.epochs; evaluate every cfg.eval_every steps and at the end."""
    started = time.perf_counter()
    torch.manual_seed(derive_seed(seed, round_index))  # dropout and other in-model randomness, per round
    optimizer = make_optimizer(model, cfg)
    masked = [(weight, masks[name].to(weight.dtype)) for name, weight in prunable_weights(model).items()]
    per_epoch = steps_per_epoch(len(data.train), cfg.batch_size)
    eval_every = cfg.eval_every or per_epoch
    total_steps = per_epoch * cfg.epochs
    history: list[Evaluation] = []

    def record(step: int) -> None:
        val_loss, val_accuracy = evaluate(model, data.val) if data.val is not None else (None, None)
        test_loss, test_accuracy = evaluate(model, data.test)
        history.append(Evaluation(step, val_loss, val_accuracy, test_loss, test_accuracy))

    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        generator = torch.Generator().manual_seed(derive_seed(seed, round_index, epoch))
        order = torch.randperm(len(data.train), generator=generator).to(data.train.y.device)
        loss_sum = torch.zeros((), device=data.train.y.device)
        correct_sum = torch.zeros((), device=data.train.y.device, dtype=torch.long)
        seen = 0
        for batch in order.split(cfg.batch_size):
            x, y = data.train.x[batch], data.train.y[batch]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            for weight, mask in masked:
                weight.grad.mul_(mask)
            optimizer.step()
            step += 1
            loss_sum += loss.detach() * len(y)
            correct_sum += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if step % eval_every == 0 or step == total_steps:
                record(step)
            if on_progress is not None and step % PROGRESS_EVERY == 0:
                on_progress(step, _finite_mean(loss_sum, seen, round_index, step), correct_sum.item() / seen)
        epoch_loss = _finite_mean(loss_sum, seen, round_index, step)
        if on_progress is not None:
            on_progress(step, epoch_loss, correct_sum.item() / seen)

    validated = [e for e in history if e.val_loss is not None]
    return TrainResult(
        steps=step,
        seconds=time.perf_counter() - started,
        final=history[-1],
        early_stop=min(validated, key=lambda e: e.val_loss) if validated else None,
        best_test_accuracy=max(e.test_accuracy for e in history),
        history=history,
    )


def _finite_mean(loss_sum: Tensor, count: int, round_index: int, step: int) -> float:
    """The running training loss; a NaN or infinite loss stops the round (the run is marked failed)."""
    value = loss_sum.item() / count
    if not math.isfinite(value):
        raise RunFailed(f"round {round_index}: training loss became {value} by step {step}")
    return value
