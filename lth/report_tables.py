"""The report as a terminal shows it: one run's rounds, or configurations aggregated over seeds, each leading with
its task's headline (lth.tasks): test accuracy for classifiers, bits per character for language models.

Read side: no torch (`lth report` reads metrics.json files only).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from lth.headline import HEADLINES, group_headline, headline, value
from lth.report import Group, Run, csv_text, describe, json_rows, plain


def print_report(
    runs: Sequence[Run], groups: Sequence[Group], as_json: bool = False, as_csv: bool = False, grouped: bool = False
) -> None:
    """Print runs (from `load_runs`, grouped by `group_runs`): JSON or CSV rows, the per-round table of a single
    run, or the aggregated table; `grouped` (an explicit --group-by) aggregates even a single run."""
    from lth.ui import make_console

    if as_json:
        print(json.dumps(json_rows(runs), indent=2))
    elif as_csv:
        print(csv_text(json_rows(runs)), end="")
    elif len(runs) == 1 and not grouped:
        run = runs[0]
        status = "" if run.status == "finished" else f" ({run.status})"
        make_console().print(round_table(run.rows, title=f"{run.path}{status}"))
    else:
        title = f"{describe(runs)}: {len(runs)} runs, {len(groups)} configuration(s), mean ± std over seeds"
        make_console().print(aggregate_table(groups, title=title))


def round_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    lead = headline(rows[0]) if rows else HEADLINES["classification"]
    columns = (f"{lead.short} (early stop)", f"final {lead.short}")
    for header in ("round", "density", "params", *columns, "early-stop step", "time"):
        table.add_column(header, justify="right")
    collapsed = any(row.get("collapsed_layers") for row in rows)
    if collapsed:  # the network is cut in two there: its accuracy is chance, whatever the criterion
        table.add_column("collapsed layers", style="bold red")
    for row in rows:
        notes = [", ".join(row.get("collapsed_layers") or [])] if collapsed else []
        table.add_row(
            str(row["round"]),
            f"{row['density']:.2%}",
            f"{row['param_density']:.2%}",
            value(row.get(lead.early_stop), lead),
            value(row.get(lead.final), lead),
            "-" if row["early_stop_step"] is None else str(row["early_stop_step"]),
            f"{row['seconds']:.1f}s",
            *notes,
        )
    return table


def aggregate_table(groups: Sequence[Group], title: str | None = None) -> Table:
    """One row per (configuration, round): the grouping keys, n, and mean ± std over seeds of each metric.

    A configuration with unfinished runs is marked in a `runs` column (how many failed, were interrupted, ...);
    a run with no finished round appears as a row of its own, so nothing is silently dropped.
    """
    table = Table(title=title, title_justify="left")
    keys = list(groups[0].label) if groups else []
    for key in keys:
        table.add_column(key)
    lead = group_headline(groups)
    for header in ("round", "n", "density", f"{lead.short} (early stop)", f"final {lead.short}", "early-stop step"):
        table.add_column(header, justify="right")
    marked = any(run.status != "finished" or not run.rows for group in groups for run in group.runs)
    if marked:
        table.add_column("runs", style="bold red")
    for group in groups:
        note = [_group_note(group)] if marked else []
        labels = [plain(group.label[key]) for key in keys]
        for row in group.rounds():
            table.add_row(
                *labels,
                str(row["round"]),
                str(row["n"]),
                _format(row["density"], ".2%"),
                _format(row[lead.early_stop], lead.spec),
                _format(row[lead.final], lead.spec),
                _format(row["early_stop_step"], ".0f"),
                *note,
            )
            labels, note = ["" for _ in keys], [""] if marked else []  # name the configuration once
        for run in group.runs:
            if not run.rows:
                table.add_row(*labels, "-", "0", "-", "-", "-", "-", f"no finished rounds ({run.status}): {run.path}")
                labels = ["" for _ in keys]
        if group is not groups[-1]:
            table.add_section()
    return table


def _format(stat: dict[str, float] | None, spec: str) -> str:
    if stat is None:
        return "-"
    text = format(stat["mean"], spec)
    # equal values (density under a layerwise plan, n = 1) need no spread; the n column says how many there were
    return text if stat["std"] == 0 else f"{text} ± {format(stat['std'], spec)}"


def _group_note(group: Group) -> str:
    counts: dict[str, int] = {}
    for run in group.runs:
        if run.status != "finished":
            counts[run.status] = counts.get(run.status, 0) + 1
    return ", ".join(f"{count} {status}" for status, count in counts.items())
