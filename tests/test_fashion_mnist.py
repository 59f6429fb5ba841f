"""The real thing: `lth run` on Debian's Fashion-MNIST files (slow; `make test-slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import lth

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make data)"),
]


def test_lenet_on_fashion_mnist_learns_and_a_pruned_round_keeps_up(tmp_path):
    run_dir = tmp_path / "run"
    lth("run", "prune.rounds=1", "train.epochs=1", "ui.progress=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    rows = json.loads(lth("report", str(run_dir), "--json", cwd=tmp_path).stdout)
    dense, pruned = rows
    assert dense["test_accuracy"] > 0.80  # one epoch of LeNet-300-100 on Fashion-MNIST reaches about 84%
    assert pruned["density"] == pytest.approx(0.8004, abs=1e-4)
    assert pruned["test_accuracy"] > dense["test_accuracy"] - 0.02


def test_a_short_reproduction_the_ticket_beats_reinitialisation_on_its_own_masks(tmp_path):
    """Issue 11's claim at a size that runs in minutes: 2 seeds, a 10,000-image subset, 1 epoch a round, half of
    the weights pruned each round down to 3.2%. At the lowest density the tickets beat the re-initialised
    controls trained on the same masks (Frankle & Carbin 2019, Figure 4)."""
    short = ["dataset.subset=10000", "train.epochs=1", "prune.rate=0.5", "prune.rounds=5", "ui.progress=false"]
    tickets, controls = tmp_path / "tickets", tmp_path / "controls"
    lth("run", "-m", "seed=0,1", *short, f"hydra.sweep.dir={tickets}", cwd=tmp_path)
    lth(
        "run", "-m", "seed=0,1", "+controls=reinit", f"prune.masks_from={tickets}", *short,
        f"hydra.sweep.dir={controls}", cwd=tmp_path,
    )  # fmt: skip

    def lowest_density_accuracy(sweep: Path) -> tuple[float, float]:
        rows = json.loads(lth("report", str(sweep), "--json", cwd=tmp_path).stdout)
        last = [row for row in rows if row["round"] == 5]
        assert len(last) == 2 and all(row["density"] < 0.035 for row in last)  # hidden 0.5^5, output 0.75^5
        return sum(row["test_accuracy"] for row in last) / 2, last[0]["density"]

    ticket, ticket_density = lowest_density_accuracy(tickets)
    control, control_density = lowest_density_accuracy(controls)
    assert control_density == ticket_density, "the controls train the tickets' own masks"
    assert ticket > control, f"ticket {ticket:.2%} vs re-initialised {control:.2%} at {ticket_density:.1%}"
