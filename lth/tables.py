"""A paper's results table: one row per density, one column per arm, mean ± std over seeds (`lth report --table`).

Arms are the report's configurations (`lth.report.group_runs`), named in researcher words (`lth.arms`); rows are
the densities the arms reached (rounded to 0.01%), densest first, so IMP arms line up round by round and a
one-shot or dynamic-sparse arm lands on its own density. A cell is `mean ± std` with the seed count in the
header when every cell has the same n, in each cell otherwise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from lth.arms import arm_name
from lth.report import Group

FORMATS = ("markdown", "csv", "latex")
# metric -> (column words, scale, format)
METRICS = {
    "early_stop_test_accuracy": ("test accuracy at early stop (%)", 100, ".2f"),
    "test_accuracy": ("test accuracy at the end of the round (%)", 100, ".2f"),
    "early_stop_step": ("early-stop step", 1, ".0f"),
    "early_stop_test_bpc": ("test bits per character at early stop", 1, ".3f"),  # language models
    "test_bpc": ("test bits per character at the end of the round", 1, ".3f"),
}


def pivot(groups: Sequence[Group], metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the density × arm table of `metric`."""
    cells: dict[float, dict[int, dict[str, float]]] = {}
    names: list[str] = []
    for group in groups:
        # arms of one name (RigL at 20% and RigL at 5%, each a configuration) share a column where they do not collide
        name, points = arm_name(group.label), [r for r in group.rounds() if r["density"] and r.get(metric)]
        densities = [round(row["density"]["mean"], 4) for row in points]
        # (the dense round 0 of one-shot arms is the same network at every target density: the first one stands)
        free = name in names and all(names.index(name) not in cells.get(d, {}) or d == 1.0 for d in densities)
        column = names.index(name) if free else len(names)
        if not free:
            names.append(name)
        for density, row in zip(densities, points, strict=True):
            cells.setdefault(density, {}).setdefault(column, row[metric])
    counts = {stat["n"] for by_arm in cells.values() for stat in by_arm.values()}
    same_n = len(counts) == 1
    suffix = f" (n = {counts.pop()})" if same_n else ""
    header = ["density", *(f"{name}{suffix}" for name in names)]
    _, scale, spec = METRICS[metric]
    body = []
    for density in sorted(cells, reverse=True):
        row = [f"{density:.2%}"]
        for column in range(len(names)):
            stat = cells[density].get(column)
            row.append("" if stat is None else _cell(stat, scale, spec, show_n=not same_n))
        body.append(row)
    return header, body


def render(groups: Sequence[Group], metric: str, fmt: str) -> str:
    header, body = pivot(groups, metric)
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *body])
        return buffer.getvalue()
    if fmt == "latex":
        lines = [
            "\\begin{tabular}{" + "r" * len(header) + "}",
            "\\toprule",
            " & ".join(_latex(h) for h in header) + " \\\\",
            "\\midrule",
            *(" & ".join(_latex(cell) for cell in row) + " \\\\" for row in body),
            "\\bottomrule",
            "\\end{tabular}",
        ]
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _cell(stat: dict[str, Any], scale: int, spec: str, show_n: bool) -> str:
    text = f"{stat['mean'] * scale:{spec}}"
    if stat["n"] > 1:  # one seed has no spread to show
        text += f" ± {stat['std'] * scale:{spec}}"
    return f"{text} (n = {stat['n']})" if show_n else text


def _latex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("%", "\\%").replace("±", "$\\pm$").replace("_", "\\_")
