"""The command line end to end: `lth run` on synthetic data, the outputs tree, report, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FAST, lth, lth_ok
from safetensors.torch import load_file

from lth.checkpoint import ROUND_FILES

JSON_KEYS = {
    "run",
    "round",
    "density",
    "test_accuracy",
    "best_test_accuracy",
    "early_stop_step",
    "seed",
    "model",
    "dataset",
}


def test_run_writes_the_outputs_tree_and_proves_its_invariants(fast_run):
    assert (fast_run / ".hydra" / "config.yaml").is_file() and (fast_run / ".hydra" / "overrides.yaml").is_file()
    record = json.loads((fast_run / "run.json").read_text())
    assert record["status"] == "finished" and record["rounds_finished"] == 3
    assert {"torch", "python", "lth"} <= set(record["versions"]) and len(record["config_hash"]) == 16
    assert sorted(p.name for p in fast_run.iterdir() if p.name.startswith("round_")) == [
        "round_00",
        "round_01",
        "round_02",
    ]
    assert not [p for p in fast_run.rglob("*") if p.name.startswith(".") and p.name != ".hydra"], "temp files left"
    rewind = load_file(fast_run / "rewind.safetensors")
    previous_mask = None
    for index in range(3):
        folder = fast_run / f"round_{index:02d}"
        assert sorted(p.name for p in folder.iterdir()) == sorted(ROUND_FILES)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert all(metrics["checks"].values()) and len(metrics["checks"]) == 4
        mask, start, final = (load_file(folder / f"{n}.safetensors") for n in ("mask", "start", "final"))
        for name, keep in mask.items():
            assert torch.equal(start[name], torch.where(keep, rewind[name], 0)), "survivors not rewound to θ0"
            assert not final[name][~keep].any(), "pruned weights moved during training"
            if previous_mask is not None:
                assert not (keep & ~previous_mask[name]).any(), "a pruned weight was revived"
        previous_mask = mask
        expected_fc1 = round(784 * 300 * 0.8**index) / (784 * 300)
        assert metrics["layer_density"]["fc1.weight"] == pytest.approx(expected_fc1)
        assert metrics["layer_density"]["fc3.weight"] == pytest.approx(round(1000 * 0.9**index) / 1000)


def test_report_json_rows_and_table(fast_run, tmp_path, capsys, wide_console):
    rows = json.loads(lth_ok("report", str(fast_run), "--json", capsys=capsys))
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(set(r) >= JSON_KEYS for r in rows)
    assert rows[0]["density"] == 1.0 and rows[2]["density"] < rows[1]["density"] < 1.0
    assert {r["model"] for r in rows} == {"lenet_300_100"} and {r["dataset"] for r in rows} == {"synthetic"}
    table = lth_ok("report", str(fast_run), capsys=capsys)
    for header in ("round", "density", "acc (early stop)", "final acc", "early-stop step", "time"):
        assert header in table
    assert f"{rows[2]['test_accuracy']:.2%}" in table
    # a folder of runs reports every run under it
    assert len(json.loads(lth_ok("report", str(tmp_path), "--json", capsys=capsys))) == 3


def test_resume_of_a_finished_run_does_no_work(fast_run, capsys):
    before = sorted(p.name for p in fast_run.iterdir())
    printed = lth_ok("resume", str(fast_run), capsys=capsys)
    assert sorted(p.name for p in fast_run.iterdir()) == before
    assert "round" in printed


@pytest.mark.slow  # a real sweep in a subprocess: about 9 s (sweeps are tested in-process in test_sweeps.py)
def test_a_sweep_runs_every_job_in_its_own_directory(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    lth("run", "-m", "seed=0,1", *FAST, "prune.rounds=0", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml", "sweep.json"]
    rows = json.loads(lth_ok("report", str(sweep), "--json", capsys=capsys))
    assert sorted((r["seed"], r["round"]) for r in rows) == [(0, 0), (1, 0)]
    inits = [load_file(sweep / job / "init.safetensors")["fc1.weight"] for job in ("0", "1")]
    assert not torch.equal(*inits), "both jobs ran with the same seed"


def test_run_into_a_directory_that_holds_a_run_is_refused(fast_run, tmp_path):
    before = {p: p.read_bytes() for p in [fast_run / "run.json", *fast_run.glob("round_*/*")]}
    result = lth("run", *FAST, f"hydra.run.dir={fast_run}", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == f"lth: error: {fast_run} already holds a run; continue it with: lth resume {fast_run}\n"
    assert all(p.read_bytes() == content for p, content in before.items())


def test_bad_input_from_the_shell_exits_2_without_traceback(tmp_path):
    result = lth("run", "model=no_such_model", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("lth: error: model=no_such_model: no such model; choose one of: conv2, conv4")
    assert result.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_hydra_help_and_cfg_behave_as_in_any_hydra_app(tmp_path, capsys):
    printed = lth("run", "--cfg", "job", "prune.rate=0.3", cwd=tmp_path).stdout
    assert "rate: 0.3" in printed and "name: lenet_300_100" in printed
    assert "== Config ==" in lth("run", "--help", cwd=tmp_path).stdout
    assert "commands:" in lth_ok("--help", capsys=capsys)
    assert not list(tmp_path.iterdir())
