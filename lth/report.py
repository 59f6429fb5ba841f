"""Results of finished rounds: per-round rows, the tables people read, and seed aggregation.

Rows come from the files on disk (round_NN/metrics.json and the config in run.json), so `lth report` shows
the same numbers for a finished, interrupted or resumed run as the run printed itself.

Runs that differ only by `seed` (and by keys that cannot change results, `lth.structured.decides_results`) are one
*configuration*; the aggregated table gives, per configuration and round, the mean ± sample standard deviation
over its seeds, as the lottery-ticket papers plot them (Frankle & Carbin 2019 average five trials per point).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.checkpoint import RUN_FILE, find_runs, published_rounds, read_json, round_dir
from lth.errors import ConfigError, RunFailed
from lth.schema import SPARSE_FROM_START

# The metrics aggregated over seeds (the JSON row contract's numbers, see DESIGN.md). The headline is the test
# accuracy at the step of the lowest validation loss (the papers' measure); `best_test_accuracy`, the best test
# accuracy over a round's evaluations, is chosen on the test set: an oracle, kept in the JSON rows only.
AGGREGATED = ("density", "early_stop_test_accuracy", "test_accuracy", "best_test_accuracy", "early_stop_step")
LANGUAGE_MODEL_AGGREGATED = ("early_stop_test_bpc", "test_bpc")  # bits per character (lth.tasks), when present
# What the report, the plots and the export read from a round's metrics.json: key -> (description, check).
_NUMBER = ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
_METRICS = {
    "density": _NUMBER,
    "param_density": _NUMBER,
    "test_accuracy": _NUMBER,
    "best_test_accuracy": _NUMBER,
    "seconds": _NUMBER,
    "early_stop_step": ("an integer or null", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool))),
    "layer_density": (
        "an object of numbers",
        lambda v: isinstance(v, dict) and all(_NUMBER[1](x) for x in v.values()),
    ),
    "history": (
        "a list of evaluations with a step and a test_accuracy",
        lambda v: (
            isinstance(v, list)
            and all(isinstance(e, dict) and _NUMBER[1](e.get("step")) and _NUMBER[1](e.get("test_accuracy")) for e in v)
        ),
    ),
}


def run_rows(run_dir: Path) -> list[dict[str, Any]]:
    """One row per finished round of one run."""
    return read_run(run_dir).rows


def rows(path: Path) -> list[dict[str, Any]]:
    return [row for run in find_runs(path) for row in run_rows(run)]


@dataclass
class Run:
    """One run directory as the report sees it: its flattened config, status and finished rounds."""

    path: Path
    config: dict[str, Any]  # dotted key -> value (lth.structured.flatten)
    status: str
    rows: list[dict[str, Any]]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    def history(self, round_index: int) -> list[dict[str, Any]]:
        """The evaluations of one round (step, accuracies, losses), from its metrics.json."""
        return read_metrics(self.path, round_index)["history"]


def read_metrics(run_dir: Path, round_index: int) -> dict[str, Any]:
    """A published round's metrics.json, checked to hold what the report reads; RunFailed (exit 1: the run's
    record is damaged, not the command) naming the file and the round otherwise."""
    path = round_dir(run_dir, round_index) / "metrics.json"
    damaged = f"{path}: round {round_index} of {run_dir} is damaged"
    try:
        metrics = read_json(path)
    except FileNotFoundError:
        raise RunFailed(f"{damaged}: its metrics.json is missing") from None
    except OSError as error:
        raise RunFailed(f"{damaged}: its metrics.json cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunFailed(f"{damaged}: its metrics.json is not valid JSON ({reason})") from None
    if not isinstance(metrics, dict):
        raise RunFailed(f"{damaged}: its metrics.json holds a {type(metrics).__name__}, not a JSON object")
    for key, (what, ok) in _METRICS.items():
        if key not in metrics:
            raise RunFailed(f"{damaged}: its metrics.json has no {key!r}")
        if not ok(metrics[key]):
            raise RunFailed(f"{damaged}: {key!r} in its metrics.json must be {what}, found {metrics[key]!r:.60}")
    return metrics


def read_run(run_dir: Path) -> Run:
    """A run's config and status from run.json, and one row per finished round from its metrics.json files."""
    from lth.checkpoint import read_run_record
    from lth.structured import flatten, from_container

    record = read_run_record(run_dir)
    cfg = from_container(record.get("config"), run_dir / RUN_FILE, registries=False)  # read only: no torch
    status = record.get("status", "unknown")
    rows = []
    for index in range(published_rounds(run_dir)):
        metrics = read_metrics(run_dir, index)
        metrics.pop("history", None)
        rows.append(
            {
                "run": str(run_dir),
                "round": index,
                "seed": cfg.seed,
                "model": cfg.model.name,
                "dataset": cfg.dataset.name,
                "status": status,
                **metrics,
            }
        )
    return Run(run_dir, flatten(cfg), status, rows)


@dataclass
class Group:
    """Runs of one configuration (all keys but the seed, or the `--group-by` keys, equal)."""

    label: dict[str, Any]  # the distinguishing keys and their values in this group
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({run.seed for run in self.runs})

    def name(self) -> str:
        """The arm in researcher words (ticket, reinit, random pruning, rate 0.3, ...), for legends and columns."""
        from lth.arms import arm_name

        return arm_name(self.label)

    def rounds(self) -> list[dict[str, Any]]:
        """Per round: n (runs that finished it), and mean/std of each AGGREGATED metric over those runs."""
        longest = max((len(run.rows) for run in self.runs), default=0)
        out = []
        for index in range(longest):
            members = [run.rows[index] for run in self.runs if len(run.rows) > index]
            row: dict[str, Any] = {"round": index, "n": len(members), "seeds": sorted(r["seed"] for r in members)}
            for metric in (*AGGREGATED, *LANGUAGE_MODEL_AGGREGATED):
                row[metric] = mean_std([r[metric] for r in members if r.get(metric) is not None])
            out.append(row)
        return out


def mean_std(values: Sequence[float]) -> dict[str, float] | None:
    """Mean and sample standard deviation (n − 1; 0 for a single value); None for no values."""
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Every run at or under `paths`, once each; ConfigError when none of them has a finished round."""
    seen: dict[Path, Run] = {}
    for path in paths:
        for run_dir in find_runs(path):
            if run_dir.resolve() in seen:
                continue
            seen[run_dir.resolve()] = read_run(run_dir)
    runs = list(seen.values())
    if not any(run.rows for run in runs):
        where = ", ".join(str(p) for p in paths)
        raise ConfigError(f"{where}: no finished rounds in {len(runs)} run(s) (status: {_statuses(runs)})")
    return runs


# Keys that may differ between the seeds of one arm: where the data lies, which device trained it, how often it
# was evaluated (they change no trained weight) — a report groups across them instead of splitting the arm.
NOT_ARMS = ("seed", "device", "dataset.root", "dataset.download", "train.eval_every")


def configuration(run: Run) -> dict[str, Any]:
    """What makes a run's results, by effective value: its config minus the seed and the keys that cannot change
    results (`NOT_ARMS`, `lth.structured.decides_results`); `prune.output_rate: null` is the rate it stands for."""
    from lth.structured import decides_results

    config = {key: value for key, value in run.config.items() if key not in NOT_ARMS and decides_results(key)}
    if config.get("prune.output_rate") is None and isinstance(config.get("prune.rate"), float):
        config["prune.output_rate"] = config["prune.rate"] / 2  # the schema's meaning of null: half the rate
    return config


def merged_keys(group: Group) -> dict[str, list[Any]]:
    """Configuration keys whose values differ inside one group (an explicit --group-by merged them), with the
    values: a mean ± std over such runs is not a spread over seeds."""
    configs = [configuration(run) for run in group.runs]
    keys = dict.fromkeys(key for config in configs for key in config if key not in group.label)
    merged = {}
    for key in keys:
        values = {_hashable(config.get(key)): config.get(key) for config in configs}
        if len(values) > 1:
            merged[key] = list(values.values())
    return merged


def varying_keys(runs: Sequence[Run]) -> list[str]:
    """Configuration keys whose values are not the same in every run, in config order; a key that varies in
    lockstep with an earlier one (the effective `prune.output_rate` of a rate sweep) is left out."""
    configs = [configuration(run) for run in runs]
    keys = list(dict.fromkeys(key for config in configs for key in config))
    kept, partitions = [], set()
    for key in keys:
        values = [_hashable(config.get(key)) for config in configs]
        partition = tuple(values.index(value) for value in values)  # which runs share a value, whatever it is
        if len(set(values)) > 1 and partition not in partitions:  # a key in lockstep with an earlier one adds nothing
            kept.append(key)
            partitions.add(partition)
    return kept


def group_runs(runs: Sequence[Run], by: Sequence[str] | None = None) -> list[Group]:
    """Runs grouped by the keys `by` (default: every configuration key that varies), in first-seen order."""
    if by is None:
        by = varying_keys(runs)
        if any(run.config.get("prune.schedule") in SPARSE_FROM_START for run in runs):
            # a sparse-from-the-start arm is named by its method and spread even when no other arm differs there
            by = [*by, *(key for key in ("prune.schedule", "prune.distribution") if key not in by)]
        if any(run.config.get("prune.schedule") == "oneshot" for run in runs) and "prune.schedule" in by:
            by = [*by, *(key for key in ("prune.criterion",) if key not in by)]  # one-shot SNIP, not one-shot
    else:
        known = set().union(*(run.config for run in runs))
        for key in by:
            if key not in known:
                close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1] or k.startswith(key))
                hint = f"; did you mean {', '.join(close[:5])}?" if close else " (keys look like prune.rate, seed)"
                raise ConfigError(f"--group-by {key}: no run under these paths has a config key {key}{hint}")
    groups: dict[str, Group] = {}
    for run in runs:
        label = {key: run.config.get(key) for key in by}
        groups.setdefault(_hashable(label), Group(label)).runs.append(run)
    return list(groups.values())


def describe(runs: Sequence[Run]) -> str:
    """`model on dataset, seeds 0, 1` (every model and dataset among the runs)."""
    models = sorted({str(run.config["model.name"]) for run in runs})
    datasets = sorted({str(run.config["dataset.name"]) for run in runs})
    seeds = sorted({run.seed for run in runs})
    plural = "s" if len(seeds) > 1 else ""
    return f"{', '.join(models)} on {', '.join(datasets)}, seed{plural} {', '.join(map(str, seeds))}"


def json_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """The per-(run, round) rows of `lth report --json`, each with `config`: the keys that vary between runs."""
    keys = varying_keys(runs)
    return [{**row, "config": {key: run.config.get(key) for key in keys}} for run in runs for row in run.rows]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV: nested values flattened to dotted columns (`layer_density.fc1.weight`), lists joined by
    spaces; columns in first-seen order."""
    flat = [_flatten_row(row) for row in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def _statuses(runs: Sequence[Run]) -> str:
    return ", ".join(sorted({run.status for run in runs}))


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def plain(value: Any) -> str:
    """A config value as a table cell: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _flatten_row(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten_row(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = " ".join(map(str, value))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
