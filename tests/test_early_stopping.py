"""Rounds that stop before their planned length: `train.patience` and early-bird tickets (`prune.early_ticket`)."""

from __future__ import annotations

import json

from helpers import FAST, lth_ok


def _metrics(run_dir, round_index):
    return json.loads((run_dir / f"round_{round_index:02d}" / "metrics.json").read_text())


def test_patience_stops_a_round_after_n_evaluations_without_a_lower_validation_loss(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [*FAST, "prune.rounds=0", "train.epochs=6", "train.lr=0.01", "train.patience=2"]
    lth_ok("run", *args, f"hydra.run.dir={run_dir}", capsys=capsys)
    metrics = _metrics(run_dir, 0)
    losses = [e["val_loss"] for e in metrics["history"]]
    best = losses.index(min(losses))
    assert metrics["end_reason"] == "patience" and len(losses) == best + 1 + 2  # stopped at the 2nd without a gain
    assert metrics["steps"] == metrics["history"][-1]["step"] and metrics["steps_saved"] == 60 - metrics["steps"]
    assert metrics["early_stop_step"] == metrics["history"][best]["step"]


def test_an_early_ticket_stops_round_0_when_its_mask_settles_and_imp_goes_on_from_there(tmp_path, capsys):
    run_dir = tmp_path / "run"
    # 30 steps evaluated every 5: distances from the 2nd evaluation on; a window of 2 below 0.5 settles at once
    args = [*FAST, "prune.rounds=1", "train.epochs=3", "prune.early_ticket=true", "prune.early_ticket_window=2"]
    lth_ok("run", *args, "prune.early_ticket_epsilon=0.5", f"hydra.run.dir={run_dir}", capsys=capsys)
    first, second = _metrics(run_dir, 0), _metrics(run_dir, 1)
    distances = [e["mask_distance"] for e in first["history"]]
    assert distances[0] is None and all(0 <= d < 0.5 for d in distances[1:]) and len(distances) == 3
    assert first["early_ticket_step"] == first["steps"] == 15 and first["steps_saved"] == 15
    assert second["steps"] == 30 and "early_ticket_step" not in second  # later rounds train their full length
    assert all(e["mask_distance"] is not None for e in second["history"][1:])  # still recorded, to see it settle
    lth_ok("report", str(run_dir), "--plot-dir", str(tmp_path / "figures"), capsys=capsys)
    assert (tmp_path / "figures" / "mask_distance.png").stat().st_size > 0  # one line per round
