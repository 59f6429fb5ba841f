"""Tasks: what a model is trained to do. Each dataset declares its task (`lth.data.Source.task`) and each lth model
the task it is built for (`lth.models.register(..., task=...)`); the trainer's one loop takes its pieces from here.

- `classification`: an example is an input (an image) and one label; the model maps a batch (B, ...) to logits
  (B, classes); accuracy is the fraction of labels predicted.
- `language_model`: an example is a window of `dataset.block_size` tokens and the same window shifted by one (the
  next token at every position); the model maps (B, T) int64 tokens to logits (B, T, vocab); the loss is the
  next-token cross-entropy averaged over every position, accuracy is next-token accuracy, and a round's metrics
  add the losses in bits per character (nats / ln 2; with `dataset.vocab=byte`, bits per byte).

Both are the same cross-entropy over the last dimension of the logits, so one `loss` and one `hits` serve both;
what differs is an example's shape, how many fit in an evaluation batch, and what a round reports.
Early stopping is by validation loss for both (lth.train).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"
EVAL_BATCH_SIZE = 2048  # classifiers: examples per evaluation batch
EVAL_TOKENS = 2**16  # language models: tokens per evaluation batch (logits of 64K tokens x 256 bytes: 64 MiB)


def loss(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of the logits' last dimension against integer targets of the logits' leading shape: (B, C)
    logits with (B,) labels, or (B, T, V) with (B, T) next tokens (every position weighs the same)."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction=reduction)


def hits(logits: Tensor, targets: Tensor) -> Tensor:
    """How many targets the logits' top class predicts (a count over every position)."""
    return (logits.argmax(-1) == targets).sum()


@dataclass(frozen=True)
class Task:
    name: str
    # examples per evaluation batch, from the shape of one example's targets (() for a label, (T,) for a window)
    eval_batch: Callable[[tuple[int, ...]], int]
    # a batch of `count` zero inputs for an example of `shape` (checking that a model fits, on the meta device)
    example_input: Callable[[int, tuple[int, ...], torch.device | str], Tensor]
    # the logits' shape for `count` examples of `shape` and `classes` outputs per prediction
    output_shape: Callable[[int, tuple[int, ...], int], tuple[int, ...]]
    # what a round's metrics add to lth.train.TrainResult.metrics() (read by the report and the plots)
    round_metrics: Callable[[dict[str, Any]], dict[str, Any]]
    headline: str  # the metric the report and the plots lead with: accuracy | bpc


def bits(nats: float | None) -> float | None:
    """A cross-entropy in bits (per token: per character for a char vocabulary, per byte for bytes)."""
    return None if nats is None else nats / math.log(2)


def _lm_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "test_bpc": bits(metrics["test_loss"]),
        "early_stop_test_bpc": bits(metrics["early_stop_test_loss"]),
        "early_stop_val_bpc": bits(metrics["early_stop_val_loss"]),
    }


TASKS: dict[str, Task] = {
    CLASSIFICATION: Task(
        CLASSIFICATION,
        eval_batch=lambda shape: EVAL_BATCH_SIZE,
        example_input=lambda count, shape, device: torch.zeros(count, *shape, device=device),
        output_shape=lambda count, shape, classes: (count, classes),
        round_metrics=lambda metrics: {},
        headline="accuracy",
    ),
    LANGUAGE_MODEL: Task(
        LANGUAGE_MODEL,
        eval_batch=lambda shape: max(1, EVAL_TOKENS // math.prod(shape)),
        example_input=lambda count, shape, device: torch.zeros(count, *shape, dtype=torch.long, device=device),
        output_shape=lambda count, shape, classes: (count, *shape, classes),
        round_metrics=_lm_metrics,
        headline="bpc",
    ),
}
