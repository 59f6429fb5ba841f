"""What a round's results lead with, by its task (lth.tasks): test accuracy for classifiers, bits per character
for language models. A leaf (no torch): the report, the plots and the run's own round lines all read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Headline:
    """A task's headline metric in a round's metrics.json."""

    early_stop: str  # at the early-stop step (lowest validation loss): what the report leads with
    final: str  # at the end of the round
    short: str  # column words
    words: str  # axis words (plots)
    spec: str  # its format


HEADLINES = {
    "classification": Headline("early_stop_test_accuracy", "test_accuracy", "acc", "test accuracy", ".2%"),
    "language_model": Headline("early_stop_test_bpc", "test_bpc", "bpc", "test bits per character", ".3f"),
}


def task(row: dict[str, Any]) -> str:
    """The task of a round's row (rows written before the language-model task have no `task`: classifiers)."""
    return row.get("task") or "classification"


def headline(row: dict[str, Any]) -> Headline:
    """The headline of a round's row."""
    return HEADLINES[task(row)]


def value(number: float | None, lead: Headline) -> str:
    return "-" if number is None else format(number, lead.spec)


def group_headline(groups: Sequence[Any]) -> Headline:
    """The headline of rows of groups of runs (the first finished round's; a report over both kinds uses the
    first's, and `lth report --plot` refuses to mix them)."""
    return next(
        (headline(run.rows[0]) for group in groups for run in group.runs if run.rows), HEADLINES["classification"]
    )
