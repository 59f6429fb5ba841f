"""Batched replicates (`train.replicates=N`): one round of N seeds of one config trained in lockstep.

Each replicate keeps everything a run of its seed alone has: its run directory, model, masks, train/validation
split, data order, augmentation and Trainer (step, evaluation history, checkpoints). Only the arithmetic is
shared: the replicates' parameters and buffers are stacked along a new leading dimension, the model is applied
to each replicate's own batch under `torch.func.vmap(functional_call)`, and one optimiser steps the stacks (each
replicate evaluates its own model, as alone: one batched pass was slower on the CPU). That
is N separate runs, to float rounding, because the summed loss gives each replicate exactly its own gradient and
Adam and SGD (momentum, weight decay) act elementwise. Each replicate's parameters are views into the stacks, so
its model is current at every step (rewind point, checks, checkpoints, publishing) without copying.

What would break that equivalence is refused up front (lth.schema): fp16 loss scaling (one scale for all
replicates would skip their steps together), torch.compile, torchrun; and dropout (vmap would draw other masks
than a solo run) and recurrent layers (vmap has no batching rule for nn.LSTM's fused kernel), refused by
`check_model`. Language models batch like classifiers: the loss and accuracy count every next token (lth.tasks).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lth.errors import ConfigError, Interrupted
from lth.models import prunable_weights
from lth.optim import make_optimizer, set_lr
from lth.tasks import loss
from lth.train import PROGRESS_EVERY, ProgressCallback, Trainer, TrainResult

Stacked = dict[str, Tensor]  # parameter or buffer name -> the N replicates' tensors stacked on dimension 0


def check_model(model: nn.Module) -> None:
    """Refuse a model whose forward pass draws random numbers (batched, it would not equal its solo runs), or
    that vmap cannot batch (recurrent layers)."""
    recurrent = [name for name, module in model.named_modules() if isinstance(module, nn.RNNBase)]
    if recurrent:
        raise ConfigError(
            f"train.replicates needs a model without recurrent layers (torch.func.vmap cannot batch nn.LSTM's fused "
            f"kernel); this one has {', '.join(recurrent)}; use train.replicates=1"
        )
    dropout = [name for name, module in model.named_modules() if isinstance(module, nn.Dropout) and module.p > 0]
    if dropout:
        raise ConfigError(
            f"train.replicates needs a model without dropout (batched replicates would draw other dropout masks "
            f"than runs alone); this one has dropout at {', '.join(dropout)}; use train.replicates=1"
        )


class ReplicateBatch:
    """The Trainers of one round of N replicates, trained together from their common step to the round's end."""

    def __init__(self, trainers: Sequence[Trainer]) -> None:
        lead = trainers[0]
        if any(t.step != lead.step or t.total_steps != lead.total_steps for t in trainers):
            raise ValueError("replicates train together only from the same step of rounds of the same length")
        self.trainers = list(trainers)
        models = [t.model for t in trainers]
        # The structure functional_call runs; its own tensors are never used, so they need no memory.
        self.template = copy.deepcopy(models[0]).to("meta")
        self.params, self.transposed = _stack_and_view(models, lambda m: m.named_parameters(), transpose_matrices=True)
        for stacked in self.params.values():
            stacked.requires_grad_()
        self.buffers, _ = _stack_and_view(models, lambda m: m.named_buffers(), transpose_matrices=False)
        prunable = list(prunable_weights(models[0]))
        self.prunable = [self.params[name] for name in prunable]
        self.masks = [
            torch.stack([t.masks[index].T if name in self.transposed else t.masks[index] for t in trainers])
            for index, name in enumerate(prunable)
        ]
        self.optimizer = make_optimizer(self.params.values(), lead.cfg)
        self._load_replicate_states()
        for index, trainer in enumerate(trainers):
            trainer.optimizer_state = lambda index=index: self.replicate_optimizer_state(index)
        self._losses = vmap(self._loss, randomness="error")
        # vmap runs attention's fused CPU kernel once per replicate (no batching rule): the numbers of a solo run,
        # at about 6% over it (measured on 2 replicates of the ViT's shapes), so torch's "please file an issue"
        # warning would only alarm a user.
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")

    def model_params(self) -> Stacked:
        """The stacks in the models' own layout (views: matrices stored transposed are transposed back)."""
        return {name: p.transpose(1, 2) if name in self.transposed else p for name, p in self.params.items()}

    def _loss(self, params: Stacked, buffers: Stacked, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = functional_call(self.template, (params, buffers), (x,))
        return loss(logits, y), logits

    def run(
        self,
        on_progress: ProgressCallback | None = None,
        after_step: Sequence[Callable[[Trainer], None]] | None = None,
        each_progress: Sequence[ProgressCallback | None] | None = None,
    ) -> list[TrainResult]:
        """Train every replicate to the end of the round; `after_step[i]` is replicate i's `Trainer.run` hook
        (called for every replicate before an `Interrupted` from any of them ends the round, so each saves its
        state). `on_progress` gets the replicates' mean loss and accuracy, `each_progress[i]` replicate i's own
        (its tracker's live stream)."""
        trainers, lead = self.trainers, self.trainers[0]
        started = time.perf_counter() - lead.seconds
        device = lead.data.train.y.device
        amp_dtype = lead.amp_dtype
        count = len(trainers)
        for epoch in range(lead.step // lead.steps_per_epoch, lead.cfg.epochs):
            loss_sum = torch.zeros(count, device=device)
            correct_sum = torch.zeros(count, device=device, dtype=torch.long)
            seen = 0
            for batches in zip(*(t.epoch_batches(epoch) for t in trainers), strict=True):
                pairs = [t.batch(indices) for t, indices in zip(trainers, batches, strict=True)]
                x, y = torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    losses, logits = self._losses(self.model_params(), self.buffers, x, y)
                self.optimizer.zero_grad()
                losses.sum().backward()  # replicate i's parameters get the gradient of its own loss alone
                torch._foreach_mul_([weight.grad for weight in self.prunable], self.masks)
                set_lr(self.optimizer, lead.lr_at(lead.step))
                self.optimizer.step()
                for trainer in trainers:
                    trainer.step += 1
                predictions = y[0].numel()  # per replicate: labels, or every next token of the windows
                loss_sum += losses.detach() * predictions
                correct_sum += (logits.detach().argmax(-1) == y).flatten(1).sum(1)
                seen += predictions
                if lead.evaluation_due():
                    self._evaluate()
                if lead.step % PROGRESS_EVERY == 0:
                    self._progress(loss_sum, correct_sum, seen, on_progress, each_progress)
                self._after_step(after_step, time.perf_counter() - started)
            self._progress(loss_sum, correct_sum, seen, on_progress, each_progress)
        for trainer in trainers:
            trainer.seconds = time.perf_counter() - started
        return [trainer.result() for trainer in trainers]

    def _progress(
        self,
        loss_sum: Tensor,
        correct_sum: Tensor,
        seen: int,
        on_progress: ProgressCallback | None,
        each_progress: Sequence[ProgressCallback | None] | None,
    ) -> None:
        """Report the running losses and accuracies: their mean to `on_progress`, each replicate's to its own
        callback; a NaN or infinite loss in any replicate stops the round."""
        if on_progress is None and not any(each_progress or ()):
            return
        losses = [t.finite_mean(total, seen) for t, total in zip(self.trainers, loss_sum, strict=True)]
        accuracies = [hits / seen for hits in correct_sum.tolist()]
        if on_progress is not None:
            on_progress(self.trainers[0].step, sum(losses) / len(losses), sum(accuracies) / len(accuracies))
        for callback, loss_value, accuracy in zip(each_progress or (), losses, accuracies, strict=False):
            if callback is not None:
                callback(self.trainers[0].step, loss_value, accuracy)

    def _after_step(self, hooks: Sequence[Callable[[Trainer], None]] | None, seconds: float) -> None:
        for trainer in self.trainers:
            trainer.seconds = seconds
        if hooks is None:
            return
        stopped: Interrupted | None = None
        for trainer, hook in zip(self.trainers, hooks, strict=True):
            try:
                hook(trainer)
            except Interrupted as error:
                stopped = error
        if stopped is not None:
            raise stopped

    def _evaluate(self) -> None:
        """Each replicate evaluates its own model (views into the stacks, so current) as its run alone does: on the
        CPU that is faster than one batched pass (the per-replicate validation and training samples would be
        stacked, and the batches split N ways), and it gives exactly a solo run's numbers."""
        for trainer in self.trainers:
            trainer.evaluate_now()

    def _load_replicate_states(self) -> None:
        """A round resumed part-way: each replicate's own optimiser holds its saved state (`Trainer`'s
        `load_state_dict`); the batched one takes their stack, so the round goes on as if never stopped."""
        states = [trainer.optimizer.state_dict()["state"] for trainer in self.trainers]
        if not states[0]:
            return  # a round from its start: no step taken yet
        transposed = [name in self.transposed for name in self.params]  # state keys are parameter positions

        def stack(key: int, name: str) -> Any:
            parts = [state[key][name] for state in states]
            if not isinstance(parts[0], Tensor) or parts[0].dim() == 0:
                return parts[0]  # Adam's step count: the same for every replicate
            return torch.stack([part.T if transposed[key] else part for part in parts])

        batched = {key: {name: stack(key, name) for name in entry} for key, entry in states[0].items()}
        self.optimizer.load_state_dict({"state": batched, "param_groups": self.optimizer.state_dict()["param_groups"]})

    def replicate_optimizer_state(self, index: int) -> dict[str, Any]:
        """Replicate `index`'s slice of the batched optimiser's state, in the form its own optimiser would save:
        per-weight tensors are sliced; per-parameter counters (Adam's step) are the same for every replicate."""
        state = self.optimizer.state_dict()
        count = len(self.trainers)
        transposed = [name in self.transposed for name in self.params]  # state keys are parameter positions

        def pick(value: Any, key: int) -> Any:
            if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == count:
                mine = value[index].T if transposed[key] else value[index]
                return mine.clone(memory_format=torch.contiguous_format)
            return value.clone() if isinstance(value, Tensor) else value

        return {
            "state": {key: {name: pick(v, key) for name, v in entry.items()} for key, entry in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"]),
        }


def _stack_and_view(
    models: Sequence[nn.Module], named: Callable[[nn.Module], Any], transpose_matrices: bool
) -> tuple[Stacked, set[str]]:
    """Stack the models' tensors of each name, then make every model's tensor a view of its slice.

    With `transpose_matrices`, matrices (linear weights) are stacked transposed, (N, in, out): the gradient of a
    batched matrix product comes out in that layout, so the stack takes it as it is instead of autograd copying it
    into the parameter's layout every step (a quarter of a batched LeNet step on the CPU). Returns the stacks and
    the names stored transposed.
    """
    per_model = [dict(named(model)) for model in models]
    transposed = {name: transpose_matrices and tensor.dim() == 2 for name, tensor in per_model[0].items()}
    stacked = {
        name: torch.stack([t[name].detach().T if transposed[name] else t[name].detach() for t in per_model])
        for name in per_model[0]
    }
    for index, tensors in enumerate(per_model):
        for name, tensor in tensors.items():
            tensor.data = stacked[name][index].T if transposed[name] else stacked[name][index]
    return stacked, {name for name, flag in transposed.items() if flag}
