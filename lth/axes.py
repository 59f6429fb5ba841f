"""The axes every lth figure shares (lth.plots, lth.ticket_plots): density on a log axis from 100% down, and
legends beside the axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lth.report import Group

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_DENSITY_TICKS = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


def legend(ax: Axes, **kwargs: Any) -> None:
    """The legend beside the axes, never over the data (the saved figure grows to hold it)."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def density_axis(ax: Axes, groups: Sequence[Group], lowest: float | None = None, what: str = "") -> None:
    """Log-scaled density running from 100% down to the sparsest round (Frankle & Carbin's x axis), or down to
    `lowest` (a layer's density: `what` names it in the label)."""
    if lowest is None:
        lowest = min(row["density"] for g in groups for run in g.runs for row in run.rows)
    ax.set_xscale("log")
    ax.set_xlim(1.05, lowest / 1.15)  # reversed: pruning proceeds to the right
    log_percent_axis(ax.xaxis, lowest)
    ax.set_xlabel(f"weights remaining{what} (density, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def log_percent_axis(axis: Any, lowest: float) -> None:
    """Ticks at 100%, 50%, 20%, 10%, ... down to `lowest`, labelled as percentages."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ticks = [t for t in _DENSITY_TICKS if t >= lowest / 1.15]
    if len(ticks) < 3:  # a short range (the first rounds of a run): ticks every 10% instead
        ticks = [t / 10 for t in range(10, 0, -1) if t / 10 >= lowest / 1.15]
    axis.set_major_locator(FixedLocator(ticks or [1.0]))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value * 100:.3g}%"))
    axis.set_minor_formatter(NullFormatter())
