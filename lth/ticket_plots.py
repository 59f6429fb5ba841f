"""Figures of a ticket's structure, drawn by `lth report --plot/--plot-dir` beside lth.plots' (same conventions:
legends in researcher words, the number of seeds stated):

- first-layer connectivity: how many first-layer weights survive per input pixel, as an image, for a few rounds
  (models whose first layer is linear on image inputs: LeNet-300-100's receptive field);
- mask overlap: Jaccard overlap of the masks across rounds (round r against r - 1) and across seeds (two seeds at
  one round), per layer, as heatmaps (what `lth analyze overlap` computes);
- the survivors' initial magnitude: per layer, the mean |w| at θ0 of the weights a round kept, relative to the
  whole layer's, against the layer's density (what `lth analyze layers` computes);
- dead units per layer against density (units with no incoming or no outgoing surviving weight, from each round's
  `dead_units`);
- the generalisation gap against density: training accuracy (on a fixed sample of the training split) minus test
  accuracy at the end of each round.

A figure is left out when no run has what it needs (an older run without `dead_units`, a conv first layer).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth.axes import density_axis, legend
from lth.headline import task
from lth.report import Group, Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Arms = Sequence[tuple[Group, str]]
Figure = tuple[str, Callable[["Axes"], None]]


def figures(arms: Arms, rounds: Sequence[int]) -> list[Figure]:
    """The structure figures these arms can draw, as (file stem, draw) pairs."""
    runs = [run for group, _ in arms for run in group.runs if run.rows]
    out: list[Figure] = []
    if any(_image_shape(run) is not None for run in runs):
        out.append(("first_layer_connectivity", lambda ax: connectivity(ax, arms, rounds)))
    overlaps: dict[int, list[dict[str, Any]]] = {}  # per arm, `lth analyze overlap`'s rows: computed once
    out.append(("mask_overlap_rounds", lambda ax: overlap_heatmap(ax, arms, "rounds", overlaps)))
    if any(len(group.seeds) > 1 for group, _ in arms):
        out.append(("mask_overlap_seeds", lambda ax: overlap_heatmap(ax, arms, "seeds", overlaps)))
    out.append(("layer_survivors_at_init", lambda ax: survivors_at_init(ax, arms)))
    if any(row.get("dead_units") for run in runs for row in run.rows):
        out.append(("dead_units_vs_density", lambda ax: dead_units(ax, arms)))
    if any(row.get("train_accuracy") is not None for run in runs for row in run.rows):
        out.append(("generalisation_gap_vs_density", lambda ax: generalisation_gap(ax, arms)))
    return out


def _seeds(groups: Sequence[Group]) -> str:
    counts = sorted({len(group.seeds) for group in groups})
    if counts == [1]:
        return "one seed"
    return f"mean over {counts[0] if len(counts) == 1 else f'{counts[0]}–{counts[-1]}'} seeds"


def _first_layer(run: Run, round_index: int) -> Any:
    return _first_layer_mask(run.path, round_index)


@functools.cache
def _first_layer_mask(run_dir: Path, round_index: int) -> Any:
    """The first prunable layer's mask of a round, as a bool numpy array (read once per report)."""
    from lth.analyze import masks_of

    return next(iter(masks_of(run_dir, round_index).values())).numpy()


def _image_shape(run: Run) -> tuple[int, int, int] | None:
    """(C, H, W) of the inputs when the first layer is linear on the whole image, else None (a language model's
    inputs are tokens, whatever its first matrix's width)."""
    if any(task(row) != "classification" for row in run.rows):
        return None
    shape = run.config.get("dataset.input_shape")
    mask = _first_layer(run, 0)
    if mask.ndim != 2:
        return None
    if isinstance(shape, list) and len(shape) == 3 and math.prod(shape) == mask.shape[1]:
        return shape[0], shape[1], shape[2]
    for channels in (1, 3):
        side = math.isqrt(mask.shape[1] // channels)
        if channels * side * side == mask.shape[1]:
            return channels, side, side
    return None


def connectivity(ax: Axes, arms: Arms, rounds: Sequence[int]) -> None:
    """One row of images per arm, one image per chosen round: surviving first-layer weights per input pixel
    (summed over channels, mean over seeds), each image on its own colour scale from 0 to its maximum."""
    import numpy as np

    rows = []
    for group, name in arms:
        images, titles = [], []
        runs = [run for run in group.runs if run.rows and _image_shape(run) is not None]
        for round_index in rounds:
            members = [run for run in runs if len(run.rows) > round_index]
            if not members:
                continue
            counts = [_first_layer(run, round_index).sum(0).reshape(_image_shape(run)).sum(0) for run in members]
            image = np.mean(counts, axis=0)
            images.append(image / max(float(image.max()), 1.0))
            density = statistics.fmean(run.rows[round_index]["density"] for run in members)
            titles.append(f"round {round_index} ({density:.1%}), max {image.max():.0f}")
        if images:
            rows.append((name, images, titles))
    height, width = rows[0][1][0].shape
    gap = max(2, width // 8)
    columns = max(len(images) for _, images, _ in rows)
    canvas = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap), np.nan)
    for r, (name, images, titles) in enumerate(rows):
        top = r * (height + gap)
        for c, (image, title) in enumerate(zip(images, titles, strict=True)):
            left = c * (width + gap)
            canvas[top : top + height, left : left + width] = image
            ax.text(left + width / 2, top - 0.5, title, ha="center", va="bottom", fontsize=7)
        ax.text(-1, top + height / 2, name, ha="right", va="center", fontsize=8, rotation=90)
    shown = ax.imshow(canvas, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.figure.colorbar(shown, ax=ax, fraction=0.03, label="surviving first-layer weights (fraction of the image max)")
    ax.set_axis_off()
    groups = [group for group, _ in arms]
    ax.set_title(f"First-layer connectivity per input pixel, {_seeds(groups)}", fontsize=10, pad=14)


def overlap_heatmap(ax: Axes, arms: Arms, comparison: str, overlaps: dict[int, list[dict[str, Any]]]) -> None:
    """Jaccard overlap per layer (rows) and round (columns): round r against r - 1 of the same run, or two seeds
    at round r; the mean over runs or seed pairs of each arm. `overlaps` keeps each arm's overlap rows for the
    other comparison's figure."""
    import numpy as np

    from lth.analyze import overlap

    labels, grid = [], []
    longest = max(len(run.rows) for group, _ in arms for run in group.runs)
    for group, name in arms:
        if id(group) not in overlaps:
            overlaps[id(group)] = overlap(group.runs)
        rows = [row for row in overlaps[id(group)] if row["comparison"] == comparison]
        layers = list(dict.fromkeys(layer for row in rows for layer in row["layers"]))
        for layer in [*layers, "all"]:
            line = []
            for round_index in range(longest):
                at = [row for row in rows if row["round"] == round_index]
                values = [row["all"] if layer == "all" else row["layers"][layer] for row in at]
                line.append(statistics.fmean(values) if values else np.nan)
            short = layer.removesuffix(".weight")
            labels.append(short if len(arms) == 1 else f"{name}: {short}")
            grid.append(line)
    shown = ax.imshow(np.array(grid, dtype=float), cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.figure.colorbar(shown, ax=ax, label="Jaccard overlap |a ∧ b| / |a ∨ b|")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xticks(range(longest))
    ax.set_xlabel("round")
    groups = [group for group, _ in arms]
    if comparison == "rounds":
        ax.set_title(f"Mask overlap of round r with round r − 1, {_seeds(groups)}", fontsize=10)
    else:
        pairs = max(len(group.seeds) * (len(group.seeds) - 1) // 2 for group in groups)
        ax.set_title(f"Mask overlap between seeds at each round, mean over up to {pairs} seed pairs", fontsize=10)


def survivors_at_init(ax: Axes, arms: Arms) -> None:
    """Per layer and round, the mean |w| at θ0 of the layer's surviving weights over that of all its weights,
    against the layer's density, mean over seeds: above 1 when pruning kept the weights that were large at
    initialisation (Zhou et al. 2019 find IMP does), about 1 for random pruning."""
    from lth.analyze import layers

    lowest = 1.0
    for index, (group, arm) in enumerate(arms):
        rows = [row for row in layers(group.runs) if row["init_mean_abs"] is not None and row["init_layer_mean_abs"]]
        for colour, layer in enumerate(dict.fromkeys(row["layer"] for row in rows)):
            mine = [row for row in rows if row["layer"] == layer]
            points = []
            for round_index in sorted({row["round"] for row in mine}):
                at = [row for row in mine if row["round"] == round_index]
                ratio = statistics.fmean(row["init_mean_abs"] / row["init_layer_mean_abs"] for row in at)
                points.append((statistics.fmean(row["density"] for row in at), ratio))
            xs, ys = zip(*points, strict=True)
            lowest = min(lowest, *xs)
            name = layer.removesuffix(".weight")
            ax.plot(xs, ys, ("-", "--", ":", "-.")[index % 4], marker=".", color=f"C{colour % 10}",
                    label=name if len(arms) == 1 else f"{name} ({arm})")  # fmt: skip
    ax.axhline(1, color="grey", linewidth=1, alpha=0.6)
    groups = [group for group, _ in arms]
    density_axis(ax, groups, lowest=lowest, what=" in the layer")
    ax.set_ylabel("mean |w| at θ0: survivors / whole layer")
    ax.set_title(f"Survivors' initial magnitude per layer vs its density, {_seeds(groups)}", fontsize=10)
    legend(ax)


def dead_units(ax: Axes, arms: Arms) -> None:
    """Per layer, the fraction of its units that are dead (no path through them; where a layer has no plain
    reader, its units with no incoming weight) against density, mean over seeds."""
    for index, (group, arm) in enumerate(arms):
        style = ("-", "--", ":", "-.")[index % 4]
        recorded = [row.get("dead_units") or {} for run in group.runs for row in run.rows]
        layers = list(dict.fromkeys(layer for dead in recorded for layer in dead))
        for colour, layer in enumerate(layers):
            points = _per_round(group, lambda row, layer=layer: _dead_fraction(row, layer))
            if points:
                xs, ys = zip(*points, strict=True)
                name = layer.removesuffix(".weight")
                ax.plot(xs, [100 * y for y in ys], style, marker=".", color=f"C{colour % 10}",
                        label=name if len(arms) == 1 else f"{name} ({arm})")  # fmt: skip
    density_axis(ax, [group for group, _ in arms])
    ax.set_ylabel("dead units (% of the layer's units)")
    ax.set_title(f"Dead units per layer vs density, {_seeds([group for group, _ in arms])}", fontsize=10)
    legend(ax)


def _dead_fraction(row: dict[str, Any], layer: str) -> float | None:
    entry = (row.get("dead_units") or {}).get(layer)
    if not entry:
        return None
    dead = entry["dead"] if entry["dead"] is not None else entry["no_incoming"]
    return dead / entry["units"]


def generalisation_gap(ax: Axes, arms: Arms) -> None:
    """Training accuracy (a fixed sample of the training split) minus test accuracy at the end of each round,
    against density; error bars over seeds."""
    for index, (group, arm) in enumerate(arms):
        gaps = _per_round(group, _gap, spread=True)
        if gaps:
            xs, ys, errors = zip(*gaps, strict=True)
            ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * e for e in errors], color=f"C{index % 10}",
                        marker="o", markersize=4, capsize=3, label=arm)  # fmt: skip
    ax.axhline(0, color="grey", linewidth=1, alpha=0.6)
    density_axis(ax, [group for group, _ in arms])
    ax.set_ylabel("train − test accuracy at the end of the round (points)")
    ax.set_title(f"Generalisation gap vs density, {_seeds([group for group, _ in arms])}", fontsize=10)
    legend(ax)


def _gap(row: dict[str, Any]) -> float | None:
    train = row.get("train_accuracy")
    return None if train is None else train - row["test_accuracy"]


def _per_round(group: Group, value: Callable[[dict[str, Any]], float | None], spread: bool = False) -> list:
    """Per round with a value in some run: (mean density, mean value[, std of the value]) over the group's runs."""
    longest = max(len(run.rows) for run in group.runs)
    out = []
    for round_index in range(longest):
        rows = [run.rows[round_index] for run in group.runs if len(run.rows) > round_index]
        values = [v for v in map(value, rows) if v is not None]
        if values:
            point = (statistics.fmean(row["density"] for row in rows), statistics.fmean(values))
            out.append((*point, statistics.stdev(values) if len(values) > 1 else 0.0) if spread else point)
    return out
