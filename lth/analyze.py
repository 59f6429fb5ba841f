"""`lth analyze`: what the masks and weights of finished rounds say, beyond accuracy.

- overlap: per layer, the Jaccard overlap |a ∧ b| / |a ∨ b| of two masks: between consecutive rounds of a run,
  and between runs of different seeds at the same round (do seeds find the same ticket? Frankle & Carbin 2019
  find that the winning ticket is tied to its initialisation). Beside the seed comparison, the overlap two
  independent random masks of the same densities would have on average (d_a d_b / (d_a + d_b − d_a d_b)).
- layers: per round and layer, the weights remaining and the mean |w| of the survivors at initialisation
  (θ0, init.safetensors), at the round's start (the rewind point) and at its end; Zhou et al. (2019) find
  that IMP keeps weights that were large at initialisation and moved away from zero (`lth report --plot-dir`
  draws it: lth.ticket_plots.survivors_at_init).
- lmc: linear mode connectivity (Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery
  Ticket Hypothesis", ICML 2020). From round N's start weights and mask, two copies trained with different SGD
  noise (data order, augmentation) are compared along the straight line between them; the error barrier is the
  largest test error on that line minus the mean of the endpoints' errors. A round is *stable* (in the paper's
  words) when the barrier is about 0, which for sparse tickets they found only with rewinding to an early step.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch import Tensor

from lth import data, models, preflight, retrain
from lth.arms import arm_name
from lth.checkpoint import (
    INIT_FILE,
    RUN_FILE,
    find_runs,
    finished_round,
    load_sealed,
    load_tensors,
    published_rounds,
    read_run_record,
    write_json,
)
from lth.errors import ConfigError
from lth.prune import apply_masks, density
from lth.report import Run, group_runs, load_runs
from lth.seeds import LMC, derive_seed
from lth.structured import from_container
from lth.train import evaluate
from lth.ui import make_console

ANALYSIS_DIR = "analysis"


def jaccard(a: Tensor, b: Tensor) -> float:
    """|a ∧ b| / |a ∨ b| of two boolean masks; 1.0 when both are empty (they agree everywhere)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def masks_of(run_dir: Path, round_index: int) -> dict[str, Tensor]:
    return load_tensors(finished_round(run_dir, round_index) / "mask.safetensors")


def overlap(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Rows of per-layer Jaccard overlaps (`layers`, plus `all`: the overlap of all prunable weights together).

    `comparison` is `rounds` (round r against r − 1 of the same run), `seeds` (two runs of one configuration
    with different seeds, same round) or `arms` (two configurations, such as a ticket and its random-pruning
    control, at the same seed and round, from round 1); the last two carry `chance`, the expected overlap of
    random masks of the same densities.
    """
    out = []
    for run in runs:
        previous = None
        for round_index in range(len(run.rows)):
            masks = masks_of(run.path, round_index)
            if previous is not None:
                out.append(_compare("rounds", str(run.path), round_index, f"round {round_index - 1}", masks, previous))
            previous = masks
    groups = group_runs(runs)
    for first, second in itertools.combinations(groups, 2):
        for a in first.runs:
            for b in (run for run in second.runs if run.seed == a.seed):
                for round_index in range(1, min(len(a.rows), len(b.rows))):  # round 0 is dense in both
                    masks_a, masks_b = masks_of(a.path, round_index), masks_of(b.path, round_index)
                    row = _compare("arms", str(a.path), round_index, str(b.path), masks_a, masks_b)
                    row["chance"] = {name: _chance(masks_a[name], masks_b[name]) for name in masks_a}
                    row["arms"], row["seeds"] = [arm_name(first.label), arm_name(second.label)], [a.seed]
                    out.append(row)
    for group in groups:
        for a, b in itertools.combinations(group.runs, 2):
            if a.seed == b.seed:
                continue
            for round_index in range(min(len(a.rows), len(b.rows))):
                masks_a, masks_b = masks_of(a.path, round_index), masks_of(b.path, round_index)
                row = _compare("seeds", str(a.path), round_index, str(b.path), masks_a, masks_b)
                row["chance"] = {name: _chance(masks_a[name], masks_b[name]) for name in masks_a}
                row["seeds"] = [a.seed, b.seed]
                out.append(row)
    return out


def _compare(kind: str, run: str, round_index: int, against: str, a: dict[str, Tensor], b: dict[str, Tensor]) -> dict:
    union = sum(int((a[name] | b[name]).sum()) for name in a)
    both = sum(int((a[name] & b[name]).sum()) for name in a)
    return {
        "comparison": kind,
        "run": run,
        "round": round_index,
        "against": against,
        "layers": {name: jaccard(a[name], b[name]) for name in a},
        "all": both / union if union else 1.0,
    }


def _chance(a: Tensor, b: Tensor) -> float:
    """The expected Jaccard overlap of two independent uniformly random masks with a's and b's densities."""
    da, db = a.float().mean().item(), b.float().mean().item()
    union = da + db - da * db
    return da * db / union if union else 1.0


def layers(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per run, round and prunable layer: weights remaining, and mean |w| of the survivors at θ0, at the round's
    start and at its end (None when a layer has no survivors); `dead_units`, `no_incoming`, `no_outgoing`: its
    dead units (lth.compact.dead_units; None where not defined: the output layer, a ResNet's residual stream,
    models other than lth's)."""
    from lth import compact

    out = []
    for run in runs:
        init = load_sealed(run.path, INIT_FILE, "cpu")
        for round_index in range(len(run.rows)):
            folder = finished_round(run.path, round_index)
            masks = load_tensors(folder / "mask.safetensors")
            start, final = load_tensors(folder / "start.safetensors"), load_tensors(folder / "final.safetensors")
            mask_links = compact.mask_links(run.config["model.name"], masks) if _lth_model(run) else None
            dead = compact.dead_units(masks, mask_links) if mask_links is not None else {}
            for name, mask in masks.items():
                out.append(
                    {
                        "run": str(run.path),
                        "seed": run.seed,
                        "round": round_index,
                        "layer": name,
                        "remaining": int(mask.sum()),
                        "total": mask.numel(),
                        "density": int(mask.sum()) / mask.numel(),
                        "init_mean_abs": _mean_abs(init[name], mask),
                        "init_layer_mean_abs": init[name].abs().mean().item(),  # of all its weights at θ0
                        "start_mean_abs": _mean_abs(start[name], mask),
                        "final_mean_abs": _mean_abs(final[name], mask),
                        "dead_units": dead.get(name, {}).get("dead"),
                        "no_incoming": dead.get(name, {}).get("no_incoming"),
                        "no_outgoing": dead.get(name, {}).get("no_outgoing"),
                    }
                )
    return out


def _lth_model(run: Run) -> bool:
    return run.config.get("model.source", "lth") == "lth"


def _mean_abs(weight: Tensor, mask: Tensor) -> float | None:
    return weight[mask].abs().mean().item() if mask.any() else None


def lmc(run_dir: Path, round_index: int, points: int = 11, seed: int | None = None) -> dict[str, Any]:
    """Linear mode connectivity of one round (Frankle et al. 2020); the result is also written, atomically, to
    `run_dir/analysis/lmc_round_NN.json`.

    The first copy is the round's own training (its final.safetensors); the second starts from the same start
    weights and mask at the same step and trains with the SGD noise (data order, augmentation, dropout) of
    `seed` (default: one derived from the run's seed and the round, lth.seeds.LMC). `seed` = the run's seed
    retrains the round exactly (on the CPU), so the barrier is 0. All floating tensors are interpolated,
    batch-norm running statistics included (the paper's networks did so too; they are not re-estimated).
    """
    if points < 2:
        raise ConfigError(f"--points {points}: need at least 2 (the two endpoints)")
    cfg = from_container(read_run_record(run_dir).get("config"), run_dir / RUN_FILE)
    folder = finished_round(run_dir, round_index)
    device = preflight.resolve_device(cfg.device)
    dataset = data.load(cfg.dataset, cfg.seed, device)
    masks = load_tensors(folder / "mask.safetensors", str(device))
    first = load_tensors(folder / "final.safetensors", str(device))
    seed = derive_seed(cfg.seed, LMC, round_index) if seed is None else seed

    model = models.build(cfg.model, dataset.input_shape, dataset.num_classes).to(device)
    model.load_state_dict(load_tensors(folder / "start.safetensors", str(device)))
    trainer = retrain.round_trainer(cfg, model, masks, dataset, round_index, seed=seed)
    trainer.step = retrain.first_step(cfg, round_index, trainer.steps_per_epoch)
    trainer.run()
    second = {name: value.detach().clone() for name, value in model.state_dict().items()}

    curve = []
    for index in range(points):
        alpha = index / (points - 1)
        model.load_state_dict(_interpolate(first, second, alpha))
        apply_masks(model, masks)  # both ends are zero there already; this keeps the line inside the mask
        loss, accuracy = evaluate(model, dataset.test, trainer.eval_batch)  # a language model: every next token
        curve.append({"alpha": alpha, "test_error": 1 - accuracy, "test_loss": loss})
    ends = (curve[0]["test_error"] + curve[-1]["test_error"]) / 2
    result = {
        "run": str(run_dir),
        "round": round_index,
        "density": density(masks),
        "seeds": {"first": cfg.seed, "second": seed},
        "points": curve,
        "barrier": max(p["test_error"] for p in curve) - ends,
        "loss_barrier": max(p["test_loss"] for p in curve) - (curve[0]["test_loss"] + curve[-1]["test_loss"]) / 2,
    }
    (run_dir / ANALYSIS_DIR).mkdir(exist_ok=True)
    write_json(run_dir / ANALYSIS_DIR / f"lmc_round_{round_index:02d}.json", result)
    return result


def _interpolate(a: dict[str, Tensor], b: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """(1 − α)·a + α·b for floating tensors; integer buffers (batch-norm step counts) are taken from a."""
    return {name: torch.lerp(a[name], b[name], alpha) if a[name].is_floating_point() else a[name] for name in a}


# The command-line entries: a rich table by default, JSON for machines.


def main_overlap(path: Path, as_json: bool = False) -> None:
    rows = overlap(load_runs([path]))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    names = list(dict.fromkeys(name for row in rows for name in row["layers"]))
    table = Table(title=f"Jaccard overlap of masks: {path}", title_justify="left")
    for header in ("comparison", "round", "against"):
        table.add_column(header)
    for name in [*names, "all"]:
        table.add_column(name, justify="right")
    for row in rows:
        cells = [f"{row['layers'][n]:.3f}" if n in row["layers"] else "-" for n in names]
        if row["comparison"] != "rounds":  # chance beside each value: overlap means something only above it
            cells = [
                f"{c} ({row['chance'][n]:.3f})" if n in row["chance"] else c for c, n in zip(cells, names, strict=True)
            ]
        label = _overlap_label(row)
        table.add_row(label, str(row["round"]), row["against"], *cells, f"{row['all']:.3f}")
    make_console().print(table)
    if any(row["comparison"] != "rounds" for row in rows):
        make_console().print("between seeds and arms: (expected overlap of random masks of the same densities)")


def _overlap_label(row: dict[str, Any]) -> str:
    if row["comparison"] == "rounds":
        return row["run"]
    if row["comparison"] == "seeds":
        return f"seeds {row['seeds'][0]}, {row['seeds'][1]}"
    return f"{row['arms'][0]} vs {row['arms'][1]}, seed {row['seeds'][0]}"


def main_layers(path: Path, as_json: bool = False) -> None:
    rows = layers(load_runs([path]))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = make_console()
    for run in dict.fromkeys(row["run"] for row in rows):
        table = Table(title=f"Survivors per layer: {run}", title_justify="left")
        headers = ("round", "layer", "remaining", "density", "mean |w| init", "mean |w| start", "mean |w| final")
        for header in (*headers, "dead units"):
            table.add_column(header, justify="right" if header != "layer" else "left")
        for row in (r for r in rows if r["run"] == run):
            table.add_row(
                str(row["round"]),
                row["layer"],
                f"{row['remaining']:,} / {row['total']:,}",
                f"{row['density']:.2%}",
                *(_number(row[key]) for key in ("init_mean_abs", "start_mean_abs", "final_mean_abs")),
                _dead(row),
            )
        console.print(table)
    console.print(
        "lth report --plot-dir draws each layer's survivors' mean |w| at init against its density "
        "(layer_survivors_at_init.png)"
    )


def main_lmc(path: Path, rounds: Sequence[int], points: int = 11, as_json: bool = False) -> None:
    """`lth analyze lmc PATH --round N[,N]`: every run under `path` at every round in `rounds`; the barrier against
    density is the instability figure of `lth report --plot-dir` (Frankle et al. 2020, Fig. 4)."""
    if points < 2:
        raise ConfigError(f"--points {points}: need at least 2 (the two endpoints)")
    runs = find_runs(path)
    for run_dir in runs:  # every round exists before any training starts
        for round_index in rounds:
            if published_rounds(run_dir) <= round_index:
                finished_round(run_dir, round_index)
    results = [lmc(run_dir, round_index, points) for run_dir in runs for round_index in rounds]
    if as_json:
        print(json.dumps(results, indent=2))
        return
    title = f"Linear mode connectivity, round{'s' if len(rounds) > 1 else ''} {', '.join(map(str, rounds))}"
    table = Table(title=f"{title} (Frankle et al. 2020)", title_justify="left")
    for header in ("run", "round", "density", *(f"α={p['alpha']:.2g}" for p in results[0]["points"]), "barrier"):
        table.add_column(header, justify="right" if header != "run" else "left")
    for result in results:
        errors = [f"{p['test_error']:.2%}" for p in result["points"]]
        cells = (str(result["round"]), f"{result['density']:.2%}", *errors, f"{result['barrier']:.2%}")
        table.add_row(result["run"], *cells)
    make_console().print(table)
    make_console().print(
        f"test error along the line; each result saved in {ANALYSIS_DIR}/lmc_round_NN.json of its run; "
        "lth report --plot-dir draws the curves and the barrier against density"
    )


def _dead(row: dict[str, Any]) -> str:
    """Dead units of a layer (lth.compact): all, and how many of them have no incoming / no outgoing weight."""
    if row["dead_units"] is None:
        return "-"
    return f"{row['dead_units']} (in {row['no_incoming']}, out {row['no_outgoing']})"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
