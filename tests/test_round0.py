"""No round trained twice: a run whose round 0 would be another run's finished round 0 (same round-0 config, same
θ0) takes that round, verified by its checksums, instead of training it again (issue 18)."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import FAST, lth_in_process, lth_ok


@pytest.fixture
def ticket(finished_template):
    return finished_template


def metrics(run, round_index=0):
    return json.loads((run / f"round_{round_index:02d}" / "metrics.json").read_text())


def test_a_control_takes_its_tickets_round_0_and_says_so(ticket, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    control = tmp_path / "control"
    printed = lth_ok("run", *FAST, "+controls=reinit", f"prune.masks_from={ticket}", f"hydra.run.dir={control}",
                     capsys=capsys)  # fmt: skip
    assert f"round 0 taken from {ticket}" in printed
    for name in ("mask", "start", "final"):
        assert (control / "round_00" / f"{name}.safetensors").read_bytes() == (
            ticket / "round_00" / f"{name}.safetensors"
        ).read_bytes()
    assert (control / "rewind.safetensors").read_bytes() == (ticket / "rewind.safetensors").read_bytes()
    taken = metrics(control)["taken_from"]
    assert taken["run"] == str(ticket.resolve())
    assert taken["checksums"] == json.loads((ticket / "round_00" / "checksums.json").read_text())
    assert metrics(control)["test_accuracy"] == metrics(ticket)["test_accuracy"]
    assert [metrics(control, r)["round"] for r in (1, 2)] == [1, 2]  # the control's own rounds trained on from it


def test_a_one_shot_run_takes_a_named_dense_round(ticket, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    run = tmp_path / "oneshot"
    args = ["prune=oneshot", "prune.rounds=1", "prune.target_density=0.3", f"prune.round0_from={ticket}"]
    args.append(f"hydra.run.dir={run}")
    assert f"round 0 taken from {ticket}" in lth_ok("run", *FAST, *args, capsys=capsys)
    assert metrics(run, 1)["density"] == pytest.approx(0.3, abs=0.01)


def test_a_round_0_trained_otherwise_is_refused_before_anything_is_written(ticket, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "other"
    code, _, err = lth_in_process("run", *FAST, "train.lr=0.01", f"prune.round0_from={ticket}",
                                  f"hydra.run.dir={run}", capsys=capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"prune.round0_from={ticket}: its round 0 was trained otherwise (train.lr (0.0012 there, 0.01 here))" in err
    assert not run.exists()
    code, _, err = lth_in_process("run", *FAST, f"prune.round0_from={tmp_path}", capsys=capsys)
    assert code == 2 and "not a run with a finished round 0" in err


def test_a_one_shot_sweep_trains_one_dense_round(tmp_path, capsys, monkeypatch):
    """Five target densities of one seed need one dense network: the later jobs take the first job's round 0."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    sweep = tmp_path / "sweep"
    args = ["prune=oneshot", "prune.rounds=1", "prune.target_density=0.5,0.2", f"hydra.sweep.dir={sweep}"]
    printed = lth_ok("run", "-m", *FAST, *args, capsys=capsys)
    assert printed.count("round 0 taken from") == 1 and f"round 0 taken from {sweep / '0'}" in printed
    assert "taken_from" not in metrics(sweep / "0")
    assert metrics(sweep / "1")["taken_from"]["run"] == str((sweep / "0").resolve())
    final = [(sweep / job / "round_00" / "final.safetensors").read_bytes() for job in ("0", "1")]
    assert final[0] == final[1]
    assert [metrics(sweep / job, 1)["density"] for job in ("0", "1")] == pytest.approx([0.5, 0.2], abs=0.01)
