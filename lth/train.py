"""One training run of a masked network: optimiser, data order, periodic evaluation, early-stop tracking.

Pruned weights stay exactly zero because their gradients are masked before every optimiser step: they start
at zero, their gradient is zero, so SGD's momentum and Adam's moments for them stay zero and so does every
update (weight decay of a zero weight is zero too). The end-of-round checks in `lth.checks` prove it.

The task (lth.tasks, the dataset's) supplies what differs between classifiers and language models: the loss is
the cross-entropy over the logits' last dimension for both (one label per example, or the next token at every
position of a window), accuracy counts every prediction, and evaluation batches are sized by the task.

The data order of each epoch is drawn from a generator seeded by (seed, round, epoch) (see lth.seeds), so it can be
recomputed from the step count alone: a mid-round resume needs no sampler state. Each split reads those batches
itself (`Examples.batches`: from the device's memory, or decoded from disk by a streamed image tree). Under
torchrun every rank draws the same global batches and trains on its slice of each (lth.distributed).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lth import distributed
from lth.compile_guard import GuardedCompile
from lth.data import Dataset, Examples
from lth.data.splits import rows
from lth.errors import RunFailed
from lth.models import prunable_weights
from lth.optim import make_optimizer, set_lr
from lth.prune import Masks
from lth.schema import DURATION, TrainConfig
from lth.seeds import AUGMENT, DATA_ORDER, TRAIN_SAMPLE, TRAINING, derive_seed
from lth.tasks import EVAL_BATCH_SIZE, TASKS, hits, loss

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
    lr: float  # the learning rate of the last step taken
    # on a fixed, seeded sample of the training split as large as the validation split (`training_sample`): the
    # generalisation gap is train - test; None in evaluations recorded before lth measured it
    train_loss: float | None = None
    train_accuracy: float | None = None
    # normalised Hamming distance of the mask the next round would take to the previous evaluation's
    # (prune.early_ticket, lth.early_ticket); None when not tracked
    mask_distance: float | None = None


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final: Evaluation
    early_stop: Evaluation | None  # the evaluation with the lowest validation loss
    best_test_accuracy: float
    history: list[Evaluation] = field(default_factory=list)
    end_reason: str | None = None  # why the round stopped before its planned length (patience, early_ticket)
    steps_saved: int = 0  # planned steps not trained because of that

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
            "early_stop_test_loss": self.early_stop.test_loss if self.early_stop else None,
            "train_accuracy": self.final.train_accuracy,
            "train_loss": self.final.train_loss,
            "early_stop_train_accuracy": self.early_stop.train_accuracy if self.early_stop else None,
            "history": [asdict(e) for e in self.history],
            "end_reason": self.end_reason,
            "steps_saved": self.steps_saved,
        }


LearningRate = Callable[[int], float]  # the learning rate of the step taken from step count `step`


def lr_schedule(cfg: TrainConfig, per_epoch: int) -> LearningRate:
    """`train.lr_schedule` as a function of the step count alone, so a resumed or rewound round replays it."""
    total = per_epoch * cfg.epochs
    warmup = to_steps(cfg.warmup, per_epoch)
    milestones = sorted(to_steps(m, per_epoch) for m in cfg.milestones)

    def at(step: int) -> float:
        if cfg.lr_schedule == "step":
            lr = cfg.lr * cfg.gamma ** bisect.bisect_right(milestones, step)
        elif cfg.lr_schedule == "cosine":
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
        else:
            lr = cfg.lr
        return lr * (step + 1) / warmup if step < warmup else lr

    return at


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return math.ceil(train_size / batch_size)


def to_steps(duration: str, per_epoch: int) -> int:
    """`500it` (or `500`) → 500 steps; `2ep` → 2 epochs' worth of steps."""
    match = DURATION.fullmatch(duration)
    if match is None:
        raise ValueError(f"not a training duration: {duration!r} (expected e.g. 500it or 2ep)")
    count = int(match["count"])
    return count * per_epoch if match["unit"] == "ep" else count


def training_sample(data: Dataset, seed: int) -> Examples:
    """The training examples every evaluation of a run measures training loss and accuracy on: as many as the
    validation split holds (the test split without one), drawn once per run from (seed, TRAIN_SAMPLE), so every
    round is measured on the same examples at the cost of one more validation pass."""
    train = data.train
    size = min(len(train), len(data.val) if data.val is not None else len(data.test))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(seed, TRAIN_SAMPLE)))
    return train.select(order[:size].sort().values.to(train.y.device))


@torch.inference_mode()
def evaluate(model: nn.Module, split: Examples, batch_size: int = EVAL_BATCH_SIZE) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over every prediction of a split (every label, or every next token of
    every window), `batch_size` examples at a time."""
    model.eval()
    loss_sum = torch.zeros((), device=split.y.device)
    correct = torch.zeros((), device=split.y.device, dtype=torch.long)
    chunks = (slice(start, start + batch_size) for start in range(0, len(split), batch_size))
    for inputs, targets in split.batches(chunks):
        logits = model(inputs)
        loss_sum += loss(logits, targets, reduction="sum")
        correct += hits(logits, targets)
    model.train()
    return loss_sum.item() / split.y.numel(), correct.item() / split.y.numel()


class Trainer:
    """One round of training under a fixed mask.

    Owns the optimiser, the step count and the evaluation history. `state_dict()` holds everything needed to
    continue the round exactly where it stopped (weights, optimiser moments, step, RNG, history); the data
    order is recomputed from (seed, round, epoch), and the batches already seen in the current epoch are skipped.
    """

    def __init__(
        self,
        model: nn.Module,
        masks: Masks,
        data: Dataset,
        cfg: TrainConfig,
        *,
        seed: int,
        round_index: int,
        lr_at: LearningRate | None = None,
    ) -> None:
        """`lr_at` replaces the configured schedule (fine-tuning trains at its final learning rate)."""
        self.model, self.data, self.cfg = model, data, cfg
        self.seed, self.round_index = seed, round_index
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(model.parameters(), cfg)
        # what state_dict() saves as the optimiser's state; lth.replicates points it at a slice of a batched one
        self.optimizer_state: Callable[[], dict[str, Any]] = self.optimizer.state_dict
        self.forward: Callable[[Tensor], Tensor] = GuardedCompile(model) if cfg.compile else model
        prunable = prunable_weights(model)
        self.weights = list(prunable.values())
        self.masks = [masks[name].to(weight.dtype) for name, weight in prunable.items()]
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(cfg.precision))
        device_type = self.masks[0].device.type
        self.scaler = torch.amp.GradScaler(device_type) if cfg.precision == "fp16" else None
        self.eval_batch = TASKS[data.task].eval_batch(tuple(data.train.y.shape[1:]))
        self.steps_per_epoch = steps_per_epoch(len(data.train), cfg.batch_size)
        self.lr_at = lr_at or lr_schedule(cfg, self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.step = 0
        self.seconds = 0.0  # training time summed over every process that worked on this round
        self.history: list[Evaluation] = []
        # set to stop the round after the current step: `train.patience`, or a step hook (an early ticket)
        self.end_reason: str | None = None
        self.train_sample = training_sample(data, seed)
        torch.manual_seed(derive_seed(seed, TRAINING, round_index))  # dropout and other in-model randomness, per round

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and Python values only, so it loads with `torch.load(weights_only=True)`."""
        state = {
            # copies, not views: a replicate's weights are views into a stack that torch.save would write whole
            "model": {
                name: value.clone(memory_format=torch.contiguous_format)
                for name, value in self.model.state_dict().items()
            },
            "optimizer": self.optimizer_state(),
            "step": self.step,
            "seconds": self.seconds,
            "history": [asdict(e) for e in self.history],
            "cpu_rng": torch.get_rng_state(),
            "end_reason": self.end_reason,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.seconds = state["seconds"]
        self.history = [Evaluation(**e) for e in state["history"]]
        self.end_reason = state.get("end_reason")
        torch.set_rng_state(state["cpu_rng"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def run(
        self, on_progress: ProgressCallback | None = None, after_step: Callable[[Trainer], None] | None = None
    ) -> TrainResult:
        """Train from the current step to the end of the round; `after_step` may checkpoint or stop the run."""
        started = time.perf_counter() - self.seconds
        model, data, cfg = self.model, self.data, self.cfg
        device = data.train.y.device
        model.train()
        for epoch in range(self.step // self.steps_per_epoch, cfg.epochs):
            if self.end_reason is not None:
                break
            loss_sum = torch.zeros((), device=device)
            correct_sum = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for x, y in self.epoch_data(epoch):
                global_batch = len(y)
                x, y = distributed.shard(x), distributed.shard(y)  # under torchrun: this rank's slice
                if cfg.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    logits = self.forward(x)
                batch_loss = loss(logits, y)
                self.optimizer.zero_grad()  # None, not zero-filled: backward then writes instead of adding
                (batch_loss if self.scaler is None else self.scaler.scale(batch_loss)).backward()
                distributed.sum_gradients(model, len(y) / global_batch)  # before masking: every rank masks alike
                # one fused multiply over all layers: pruned weights get no gradient, so no update and no moments
                torch._foreach_mul_([weight.grad for weight in self.weights], self.masks)
                if cfg.grad_clip is not None:  # after masking, so the norm is the surviving weights' gradient's
                    self.clip_gradients(cfg.grad_clip)
                set_lr(self.optimizer, self.lr_at(self.step))
                if self.scaler is None:
                    self.optimizer.step()
                else:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                self.step += 1
                if y.numel():  # under torchrun a last batch smaller than the world leaves a rank none (a NaN mean)
                    loss_sum += batch_loss.detach() * y.numel()  # per prediction: a label, or a window's next tokens
                    correct_sum += hits(logits.detach(), y)
                    seen += y.numel()
                if self.evaluation_due():
                    self.evaluate_now()
                if on_progress is not None and self.step % PROGRESS_EVERY == 0:
                    on_progress(self.step, self.finite_mean(loss_sum, seen), correct_sum.item() / seen)
                if after_step is not None:
                    self.seconds = time.perf_counter() - started
                    after_step(self)
                if self.end_reason is not None:  # a round stopped early ends with an evaluation
                    if not self.history or self.history[-1].step != self.step:
                        self.evaluate_now()
                    break
            epoch_loss = self.finite_mean(loss_sum, seen)
            if on_progress is not None:
                on_progress(self.step, epoch_loss, correct_sum.item() / seen)

        self.seconds = time.perf_counter() - started
        return self.result()

    def clip_gradients(self, max_norm: float) -> None:
        """Scale every gradient down so that their global L2 norm is at most `max_norm` (fp16: of the unscaled
        gradients)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm, foreach=True)

    def epoch_data(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The training inputs and labels of `epoch`'s batches not yet trained on, each augmented for its step."""
        for x, y in self.data.train.batches(self.epoch_batches(epoch)):
            yield self.augmented(x), y

    def epoch_batches(self, epoch: int) -> tuple[Tensor, ...]:
        """The index batches of `epoch` not yet trained on, in the order drawn from (seed, round, epoch)."""
        return self._all_batches(epoch)[self.step - epoch * self.steps_per_epoch :]

    def _all_batches(self, epoch: int) -> tuple[Tensor, ...]:
        generator = torch.Generator().manual_seed(self._seed(DATA_ORDER, epoch))
        order = torch.randperm(len(self.data.train), generator=generator).to(self.data.train.y.device)
        return order.split(self.cfg.batch_size)

    def last_batch(self) -> tuple[Tensor, Tensor]:
        """The inputs and labels of the step just taken (augmented for the current step count): what a mask update
        computes its dense gradient on (lth.dst)."""
        epoch, index = divmod(self.step - 1, self.steps_per_epoch)
        return self.batch(self._all_batches(epoch)[index])

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The training inputs and labels at `indices`, augmented for the current step."""
        return self.augmented(self.data.train.inputs(indices)), rows(self.data.train.y, indices)

    def augmented(self, x: Tensor) -> Tensor:
        """A training batch augmented for the current step: seeded by the step, so a resumed round redraws the
        same crops."""
        augment = self.data.augment
        return x if augment is None else augment(x, torch.Generator().manual_seed(self._seed(AUGMENT, self.step)))

    def evaluation_due(self) -> bool:
        """Whether the step just taken ends an evaluation interval (`train.eval_every`, else an epoch) or the round."""
        return self.step % (self.cfg.eval_every or self.steps_per_epoch) == 0 or self.step == self.total_steps

    def _seed(self, purpose: int, index: int) -> int:
        return derive_seed(self.seed, purpose, self.round_index, index)

    def result(self) -> TrainResult:
        validated = [e for e in self.history if e.val_loss is not None]
        return TrainResult(
            steps=self.step,
            seconds=self.seconds,
            final=self.history[-1],
            early_stop=min(validated, key=lambda e: e.val_loss) if validated else None,
            best_test_accuracy=max(e.test_accuracy for e in self.history),
            history=self.history,
            end_reason=self.end_reason,
            steps_saved=self.total_steps - self.step,
        )

    def evaluate_now(self) -> None:
        data, batch = self.data, self.eval_batch
        val = evaluate(self.model, data.val, batch) if data.val is not None else None
        self.record(val, evaluate(self.model, data.test, batch), evaluate(self.model, self.train_sample, batch))

    def record(self, val: tuple[float, float] | None, test: tuple[float, float], train: tuple[float, float]) -> None:
        """Add the evaluation (loss, accuracy) on the validation and test sets and the training sample after the
        current step."""
        val_loss, val_accuracy = val if val is not None else (None, None)
        lr = self.lr_at(self.step - 1)
        self.history.append(Evaluation(self.step, val_loss, val_accuracy, *test, lr, *train))
        if self.cfg.patience and self._evaluations_without_improvement() >= self.cfg.patience:
            self.end_reason = "patience"

    def _evaluations_without_improvement(self) -> int:
        """Validated evaluations since the one with the lowest validation loss (the early-stop step)."""
        losses = [e.val_loss for e in self.history if e.val_loss is not None]
        return len(losses) - 1 - losses.index(min(losses)) if losses else 0

    def finite_mean(self, loss_sum: Tensor, count: int) -> float:
        """The running training loss; a NaN or infinite loss stops the round (the run is marked failed)."""
        value = loss_sum.item() / count
        if not math.isfinite(value):
            raise RunFailed(f"round {self.round_index}: training loss became {value} by step {self.step}")
        return value
