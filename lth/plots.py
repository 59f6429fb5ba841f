"""Figures of `lth report --plot FILE.png` / `--plot-dir DIR`, in the style of the lottery-ticket papers.

- accuracy vs density: x on a log axis running from 100% down to the sparsest round, as in Frankle & Carbin
  (ICLR 2019, Figs. 1, 3-5); one line per configuration with error bars over seeds; the dense network (round 0)
  as a dashed line.
- early-stop step vs density (Frankle & Carbin's "early-stop iteration", the step of the lowest validation loss).
- per-layer density per round (how a global or ERK plan spreads the pruning).
- training curves: test accuracy against the training step of chosen rounds.
- linear mode connectivity (Frankle et al., ICML 2020): test error along the line between two trainings of a
  round, from `lth analyze lmc` results where they exist.
- mask distance against step, one line per round, for runs with `prune.early_ticket` (You et al. 2020): how
  fast the mask the next round would take settles.
- a ticket's structure (lth.ticket_plots): first-layer connectivity, mask overlap, dead units, generalisation gap.

matplotlib is imported here only, with the Agg backend (no display needed), so `lth --help` stays fast.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lth import ticket_plots
from lth.axes import density_axis, legend, log_percent_axis
from lth.checkpoint import atomic_write, check_writable, read_json
from lth.errors import ConfigError, OutputError, RunFailed
from lth.headline import group_headline
from lth.report import Group, Run, describe

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LMC_GLOB = "analysis/lmc_round_*.json"
_LINESTYLES = ("-", "--", ":", "-.")


def render(
    groups: Sequence[Group],
    plot: Path | None = None,
    plot_dir: Path | None = None,
    rounds: Sequence[int] | None = None,
    metric: str | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Draw every figure: all as subplots of one PNG (`plot`) and/or one PNG each in `plot_dir`.

    `rounds` are the rounds whose training curves are drawn (see `check`, which refuses what cannot be drawn);
    `metric` is the y axis of the density figure (`METRICS`; None: the runs' headline); `labels` name the arms
    in the order of `groups` (default: in researcher words, `lth.arms`); `title` replaces the runs' description
    above the figures.
    """
    runs = [run for group in groups for run in group.runs if run.rows]
    rounds = check(groups, rounds, labels)
    metric = metric or group_headline(groups).early_stop  # the runs' own headline: accuracy, or bpc for LMs

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(labels) if labels is not None else [group.name() for group in groups]
    drawn = [(g, name) for g, name in zip(groups, names, strict=True) if any(run.rows for run in g.runs)]
    figures: list[tuple[str, Callable[[Axes], None]]] = [
        ("accuracy_vs_density", lambda ax: accuracy_vs_density(ax, drawn, metric)),
        ("early_stop_vs_density", lambda ax: accuracy_vs_density(ax, drawn, "early_stop_step")),
        ("layer_density", lambda ax: layer_density(ax, drawn)),
        ("training_curves", lambda ax: training_curves(ax, drawn, rounds)),
    ]
    if any(_lmc_results(run) for run in runs):
        figures.append(("lmc", lambda ax: lmc_curves(ax, runs)))
        figures.append(("instability_vs_density", lambda ax: instability(ax, drawn)))
    if any(_mask_distances(run) for run in runs):
        figures.append(("mask_distance", lambda ax: mask_distance_curves(ax, drawn)))
    figures += ticket_plots.figures(drawn, rounds)  # connectivity, mask overlap, dead units, generalisation gap
    title = title or describe(runs)
    written = []
    if plot is not None:
        columns = 2 if len(figures) <= 6 else 3  # many figures: a wider grid rather than a very tall one
        rows = (len(figures) + columns - 1) // columns
        fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.8 * rows), squeeze=False)
        for ax, (_, draw) in zip(axes.flat, figures, strict=False):
            draw(ax)
        for ax in list(axes.flat)[len(figures) :]:
            ax.set_visible(False)
        fig.suptitle(title, fontsize=14)
        fig.tight_layout()
        written.append(_save(fig, plot))
        plt.close(fig)
    if plot_dir is not None:
        try:
            plot_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"--plot-dir {plot_dir}: cannot create the folder ({error.strerror or error})") from None
        for name, draw in figures:
            fig, ax = plt.subplots(figsize=(7.5, 5))
            draw(ax)
            fig.suptitle(title, fontsize=11)
            fig.tight_layout()
            written.append(_save(fig, plot_dir / f"{name}.png"))
            plt.close(fig)
    return written


def check_paths(plot: Path | None, plot_dir: Path | None) -> None:
    """Refuse figure paths that cannot be what they name, before anything is drawn or printed: `--plot` must be a
    .png file (not a folder), `--plot-dir` a folder (not a file)."""
    if plot is not None:
        if plot.is_dir():
            raise ConfigError(f"--plot {plot} is a folder; name a .png file there, or use --plot-dir {plot}")
        if plot.suffix.lower() != ".png":
            raise ConfigError(f"--plot {plot}: name a .png file (the figures are written as PNG)")
        parent = next((p for p in plot.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ConfigError(f"--plot {plot}: {parent} is a file, not a folder")
    if plot_dir is not None:
        existing = next((p for p in (plot_dir, *plot_dir.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            what = "is a file" if existing == plot_dir else f"is inside {existing}, which is a file"
            raise ConfigError(f"--plot-dir {plot_dir} {what}; name a folder (one PNG per figure goes there)")
    if plot is not None:
        check_writable(plot, "the figure")
    if plot_dir is not None:
        check_writable(plot_dir, "figures into --plot-dir")


def check(groups: Sequence[Group], rounds: Sequence[int] | None, labels: Sequence[str] | None = None) -> list[int]:
    """The rounds whose training curves to draw (default: up to four spread over the run), after refusing runs of
    different models or datasets (their accuracies do not belong on one axis), rounds no run has, and a number
    of labels other than the number of arms."""
    runs = [run for group in groups for run in group.runs if run.rows]
    if labels is not None and len(labels) != len(groups):
        named = "; ".join(group.name() for group in groups)
        raise ConfigError(f"--label: {len(labels)} given for {len(groups)} arms ({named}); give one per arm, in order")
    for key, what in (("model.name", "models"), ("dataset.name", "datasets")):
        values = sorted({str(run.config[key]) for run in runs})
        if len(values) > 1:
            raise ConfigError(f"--plot: these runs are of different {what} ({', '.join(values)}); plot them apart")
    for run in runs:  # a damaged `lth analyze lmc` result is named before anything is printed
        _lmc_results(run)
    finished = max(len(run.rows) for run in runs)
    return _check_rounds(rounds, finished) if rounds is not None else _spread(finished)


# metric -> (axis label, scale, the dense round drawn as a reference line)
METRICS = {
    "early_stop_test_accuracy": ("test accuracy at early stop (%)", 100, True),
    "test_accuracy": ("test accuracy at the end of the round (%)", 100, True),
    "early_stop_step": ("early-stop step (lowest validation loss)", 1, False),
    "early_stop_test_bpc": ("test bits per character at early stop", 1, True),  # language models
    "test_bpc": ("test bits per character at the end of the round", 1, True),
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
Arms = Sequence[tuple[Group, str]]  # each group of runs with its name in the figures


def accuracy_vs_density(ax: Axes, arms: Arms, metric: str) -> None:
    """`metric` against density, one line per arm with error bars over seeds; for accuracies and losses the dense
    round as a dashed reference per arm. Arms sit at slightly shifted densities and have their own markers, so
    arms with equal values stay visible. Arms of one name (RigL at each of its densities) are one line."""
    label, scale, dense_reference = METRICS[metric]
    lines: dict[str, list[dict[str, Any]]] = {}
    for group, name in arms:
        lines.setdefault(name, []).extend(p for p in group.rounds() if p[metric] is not None)
    for index, (name, points) in enumerate(lines.items()):
        color = f"C{index % 10}"
        points.sort(key=lambda p: -p["density"]["mean"])
        shift = 1 + 0.012 * (index - (len(lines) - 1) / 2)  # on the log axis: the same small offset everywhere
        ax.errorbar(
            [p["density"]["mean"] * shift for p in points],
            [p[metric]["mean"] * scale for p in points],
            yerr=[p[metric]["std"] * scale for p in points],
            color=color, marker=_MARKERS[index % len(_MARKERS)], markersize=4, capsize=3, label=name,
        )  # fmt: skip
        if dense_reference and points and points[0]["density"]["mean"] == 1:  # a sparse-from-the-start arm has none
            ax.axhline(points[0][metric]["mean"] * scale, color=color, linestyle="--", linewidth=1, alpha=0.7)
    if dense_reference:
        ax.plot([], [], color="grey", linestyle="--", label="dense (round 0)")
    density_axis(ax, [group for group, _ in arms])
    ax.set_ylabel(label)
    ax.set_title(f"{label[0].upper()}{label[1:]} vs density, {_spread_words(arms)}", fontsize=10)
    legend(ax)


def _spread_words(arms: Arms) -> str:
    """`mean ± std over 5 seeds`, or `one seed` (no spread to show), as the runs are."""
    counts = sorted({len(group.seeds) for group, _ in arms})
    if counts == [1]:
        return "one seed"
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"mean ± std over {seeds} seeds"


def layer_density(ax: Axes, arms: Arms) -> None:
    """Each prunable layer's density per round (mean over seeds); line style tells arms apart."""
    layers = list(
        dict.fromkeys(name for g, _ in arms for run in g.runs for row in run.rows for name in row["layer_density"])
    )
    for index, (group, arm) in enumerate(arms):
        style = _LINESTYLES[index % len(_LINESTYLES)]
        longest = max(len(run.rows) for run in group.runs)
        for layer_index, layer in enumerate(layers):
            xs, ys = [], []
            for round_index in range(longest):
                values = [
                    run.rows[round_index]["layer_density"][layer]
                    for run in group.runs
                    if len(run.rows) > round_index and layer in run.rows[round_index]["layer_density"]
                ]
                if values:
                    xs.append(round_index)
                    ys.append(sum(values) / len(values))
            label = layer if len(arms) == 1 else f"{layer} ({arm})"
            ax.plot(xs, ys, style, marker=".", color=f"C{layer_index % 10}", label=label)
    from matplotlib.ticker import MaxNLocator

    ax.set_yscale("log")
    log_percent_axis(ax.yaxis, min(min(line.get_ydata(), default=1.0) for line in ax.get_lines()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("round")
    ax.set_ylabel("weights remaining in the layer (log scale)")
    ax.set_title("Per-layer density per round")
    legend(ax, ncol=2 if len(layers) > 6 else 1)


def training_curves(ax: Axes, arms: Arms, rounds: Sequence[int]) -> None:
    """Test accuracy against step within each chosen round (mean over seeds at each evaluation)."""
    for index, (group, arm) in enumerate(arms):
        style = _LINESTYLES[index % len(_LINESTYLES)]
        for colour, round_index in enumerate(rounds):
            curves = [run.history(round_index) for run in group.runs if len(run.rows) > round_index]
            if not curves:
                continue
            steps, means = _mean_at_shared_steps([{e["step"]: 100 * e["test_accuracy"] for e in c} for c in curves])
            density = group.rounds()[round_index]["density"]["mean"]
            name = f"round {round_index} ({density:.1%})"
            ax.plot(
                steps,
                means,
                style,
                color=f"C{colour % 10}",
                label=name if len(arms) == 1 else f"{name}, {arm}",
            )
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Training curves of chosen rounds")
    legend(ax)


def lmc_curves(ax: Axes, runs: Sequence[Run]) -> None:
    """Test error along the line between two trainings of a round (`lth analyze lmc`), one line per result."""
    for run in runs:
        for result in _lmc_results(run):
            alphas = [p["alpha"] for p in result["points"]]
            errors = [100 * p["test_error"] for p in result["points"]]
            label = (
                f"seed {run.seed}, round {result['round']} ({result['density']:.1%}): barrier {result['barrier']:.2%}"
            )
            ax.plot(alphas, errors, marker="o", markersize=3, label=label)
    ax.set_xlabel("interpolation α (0: first copy, 1: second copy)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Linear mode connectivity (Frankle et al. 2020)")
    legend(ax)


def instability(ax: Axes, arms: Arms) -> None:
    """The error barrier of `lth analyze lmc` against density, per arm, mean ± std over its seeds (Frankle et al.
    2020, Fig. 4: a subnetwork is stable, and IMP finds a matching ticket, where the barrier is about 0)."""
    import statistics

    for index, (group, name) in enumerate(arms):
        by_density: dict[float, list[float]] = {}
        for run in group.runs:
            for result in _lmc_results(run):
                by_density.setdefault(result["density"], []).append(100 * result["barrier"])
        if not by_density:
            continue
        densities = sorted(by_density, reverse=True)
        means = [statistics.fmean(by_density[d]) for d in densities]
        spreads = [statistics.stdev(by_density[d]) if len(by_density[d]) > 1 else 0.0 for d in densities]
        seeds = max(len(values) for values in by_density.values())
        label = f"{name} ({'mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else '1 seed'})"
        ax.errorbar(densities, means, yerr=spreads, marker=_MARKERS[index % len(_MARKERS)], capsize=3, label=label)
    ax.axhline(0, color="grey", linewidth=0.8)
    density_axis(ax, [group for group, _ in arms])
    ax.set_ylabel("error barrier along the line (percentage points)")
    ax.set_title("Instability: the barrier between two trainings of a round")
    legend(ax)


def mask_distance_curves(ax: Axes, arms: Arms) -> None:
    """The normalised Hamming distance between the next round's masks at consecutive evaluations, against step:
    one line per round (mean over seeds), for runs that recorded it (`prune.early_ticket`)."""
    for index, (group, arm) in enumerate(arms):
        style = _LINESTYLES[index % len(_LINESTYLES)]
        longest = max(len(run.rows) for run in group.runs)
        for round_index in range(longest):
            by_step = [
                {e["step"]: e["mask_distance"] for e in run.history(round_index) if e.get("mask_distance") is not None}
                for run in group.runs
                if len(run.rows) > round_index
            ]
            steps, means = _mean_at_shared_steps(by_step)
            if steps:
                name = f"round {round_index}"
                ax.plot(
                    steps,
                    means,
                    style,
                    color=f"C{round_index % 10}",
                    label=name if len(arms) == 1 else f"{name}, {arm}",
                )
    ax.set_xlabel("training step")
    ax.set_ylabel("mask distance to the previous evaluation")
    ax.set_title("How the next round's mask settles (You et al. 2020)")
    legend(ax)


def _mean_at_shared_steps(by_step: Sequence[dict[int, float]]) -> tuple[list[int], list[float]]:
    """The steps every run recorded a value at (runs may have trained for different lengths), and the mean there."""
    steps = sorted(set(by_step[0]).intersection(*by_step[1:]))
    return steps, [sum(values[step] for values in by_step) / len(by_step) for step in steps]


def _mask_distances(run: Run) -> bool:
    """Whether any round of `run` recorded mask distances (`prune.early_ticket`)."""
    return any(e.get("mask_distance") is not None for index in range(len(run.rows)) for e in run.history(index))


def _lmc_results(run: Run) -> list[dict[str, Any]]:
    """The `lth analyze lmc` results saved in a run; RunFailed naming a damaged one."""
    results = []
    for path in sorted(run.path.glob(LMC_GLOB)):
        try:
            result = read_json(path)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise RunFailed(
                f"{path} is not a readable lth analyze lmc result ({reason}); remove it or redo it"
            ) from None
        points = result.get("points") if isinstance(result, dict) else None
        if not (
            isinstance(points, list)
            and all(isinstance(p, dict) and {"alpha", "test_error"} <= p.keys() for p in points)
            and all(isinstance(result.get(key), int | float) for key in ("round", "density", "barrier"))
        ):
            raise RunFailed(f"{path} is not an lth analyze lmc result (points, round, density, barrier); remove it")
        results.append(result)
    return results


def _spread(finished: int) -> list[int]:
    """Up to four rounds spread evenly from the dense round to the last one."""
    count = min(4, finished)
    return sorted({round(i * (finished - 1) / max(count - 1, 1)) for i in range(count)})


def _check_rounds(rounds: Sequence[int], finished: int) -> list[int]:
    missing = [r for r in rounds if not 0 <= r < finished]
    if missing:
        raise ConfigError(
            f"--rounds {','.join(map(str, missing))}: no such round; these runs have rounds 0..{finished - 1}"
        )
    return list(rounds)


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # room for the legends beside the axes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buffer.getvalue())
    except OSError as error:
        raise OutputError(f"cannot write the figure {path}: {error.strerror or error}") from None
    return path
