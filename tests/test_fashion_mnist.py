"""The real thing: `lth run` on Debian's Fashion-MNIST files (slow; `make test-slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import lth

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
