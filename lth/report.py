"""Results of finished rounds: the per-round table and the JSON rows other tools read.

Rows come from the files on disk (round_NN/metrics.json and the config in run.json), so `lth report` shows
the same numbers for a finished, interrupted or resumed run as the run printed itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from lth.checkpoint import RUN_FILE, read_json, round_dir
from lth.errors import ConfigError


def find_runs(path: Path) -> list[Path]:
    """The run directories at or under `path` (a run, or a folder of runs such as a sweep)."""
    if (path / RUN_FILE).is_file():
        return [path]
    runs = sorted(p.parent for p in path.rglob(RUN_FILE)) if path.is_dir() else []
    if not runs:
        raise ConfigError(f"{path} is not an lth run directory (no {RUN_FILE} in it or below it)")
    return runs


def run_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One row per finished round of one run."""
    from lth.checkpoint import read_run_record
    from lth.config import from_container

    cfg = from_container(read_run_record(run_dir).get("config"), run_dir / RUN_FILE)
    rows = []
    index = 0
    while (metrics_path := round_dir(run_dir, index) / "metrics.json").is_file():
        metrics = read_json(metrics_path)
        metrics.pop("history", None)
        rows.append(
            {
                "run": str(run_dir),
                "round": index,
                "seed": cfg.seed,
                "model": cfg.model.name,
                "dataset": cfg.dataset.name,
                **metrics,
            }
        )
        index += 1
    return rows


def rows(path: Path) -> list[dict[str, Any]]:
    return [row for run in find_runs(path) for row in run_rows(run)]


def round_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for header in ("round", "density", "params", "test acc", "best acc", "early-stop step", "time"):
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
            f"{row['test_accuracy']:.2%}",
            f"{row['best_test_accuracy']:.2%}",
            "-" if row["early_stop_step"] is None else str(row["early_stop_step"]),
            f"{row['seconds']:.1f}s",
            *notes,
        )
    return table


def print_report(path: Path, as_json: bool) -> None:
    from rich.console import Console

    if as_json:
        print(json.dumps(rows(path), indent=2))
        return
    console = Console()
    for run in find_runs(path):
        console.print(round_table(run_rows(run), title=str(run)))
