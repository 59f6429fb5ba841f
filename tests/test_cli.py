"""The command line end to end: `lth run` on synthetic data, the outputs tree, report, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import FAST, lth, lth_in_process
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


def test_report_json_rows_and_table(fast_run, tmp_path):
    rows = json.loads(lth("report", str(fast_run), "--json", cwd=tmp_path).stdout)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(set(r) >= JSON_KEYS for r in rows)
    assert rows[0]["density"] == 1.0 and rows[2]["density"] < rows[1]["density"] < 1.0
    assert {r["model"] for r in rows} == {"lenet_300_100"} and {r["dataset"] for r in rows} == {"synthetic"}
    table = lth("report", str(fast_run), cwd=tmp_path).stdout
    for header in ("round", "density", "test acc", "best acc", "early-stop step", "time"):
        assert header in table
    assert f"{rows[2]['test_accuracy']:.2%}" in table
    # a folder of runs reports every run under it
    assert len(json.loads(lth("report", str(tmp_path), "--json", cwd=tmp_path).stdout)) == 3


def test_resume_after_a_kill_between_rounds_matches_an_uninterrupted_run(tmp_path):
    slow = [*FAST, "prune.rounds=4", "train.epochs=3", "dataset.train_size=1200"]
    reference = tmp_path / "reference"
    lth("run", *slow, f"hydra.run.dir={reference}", cwd=tmp_path)

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *slow, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "round_01").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in run_dir.glob("round_*"))
    assert "round_04" not in finished, "the run finished before it could be killed; make it longer"
    kept = {p: p.read_bytes() for name in finished for p in (run_dir / name).iterdir()}

    lth("resume", str(run_dir), cwd=tmp_path)
    assert all(p.read_bytes() == content for p, content in kept.items()), "a finished round was rewritten"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    for index in range(5):
        name = f"round_{index:02d}"
        for tensors in ("mask", "final"):
            ours, theirs = (load_file(d / name / f"{tensors}.safetensors") for d in (run_dir, reference))
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"{name}/{tensors} differs after resume"
        ours, theirs = (json.loads((d / name / "metrics.json").read_text()) for d in (run_dir, reference))
        assert ours["history"] == theirs["history"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "pre-emption"])
def test_a_signal_marks_the_run_interrupted_and_resume_finishes_it(tmp_path, signum):
    run_dir = tmp_path / "run"
    args = [*FAST, "prune.rounds=30", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "round_00").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"lth resume {run_dir}" in out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not list(run_dir.glob(".round_*")), "a half-written round was left visible"
    lth("resume", str(run_dir), cwd=tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["rounds_finished"] == 31


def test_resume_of_a_finished_run_does_no_work(fast_run, tmp_path):
    before = sorted(p.name for p in fast_run.iterdir())
    result = lth("resume", str(fast_run), cwd=tmp_path)
    assert sorted(p.name for p in fast_run.iterdir()) == before
    assert "round" in result.stdout


BAD_INPUT = {
    "unknown model": (["model=no_such_model"], ["model", "lenet_300_100"]),
    "rate above one": (["prune.rate=1.5"], ["prune.rate", "0 <= rate < 1"]),
    "negative rounds": (["prune.rounds=-1"], ["prune.rounds", ">= 0"]),
    "zero batch": (["train.batch_size=0"], ["train.batch_size", ">= 1"]),
    "unknown key": (["train.epoch=3"], ["train.epoch", "epochs", "batch_size"]),
    "wrong type": (["train.epochs=many"], ["train.epochs", "many"]),
    "bad choice": (["train.optimizer=adagrad"], ["train.optimizer", "adam, sgd"]),
    "empty data root": (["dataset=fashion_mnist", "dataset.root={empty}"], ["dataset.root", "{empty}"]),
    "bad value in a sweep": (["-m", "prune.rate=0.2,2.0"], ["prune.rate=2.0"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_one_line_exit_2_and_no_output_dir(tmp_path, case, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    overrides, must_mention = BAD_INPUT[case]
    code, _, err = lth_in_process("run", *[o.format(empty=empty) for o in overrides], capsys=capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lth: error: "), err
    for word in must_mention:
        assert word.format(empty=empty) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"], "bad input left something on disk"


def test_bad_input_from_the_shell_exits_2_without_traceback(tmp_path):
    result = lth("run", "model=no_such_model", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == "lth: error: model=no_such_model: no such model; choose one of: lenet_300_100\n"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["missing", "not_a_run"])
def test_resume_of_something_that_is_not_a_run(tmp_path, target, capsys):
    path = tmp_path / target
    if target == "not_a_run":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    code, _, err = lth_in_process("resume", str(path), capsys=capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"lth: error: {path} is not an lth run directory (no run.json in it or below it)"
    ]


def test_hydra_help_and_cfg_behave_as_in_any_hydra_app(tmp_path):
    printed = lth("run", "--cfg", "job", "prune.rate=0.3", cwd=tmp_path).stdout
    assert "rate: 0.3" in printed and "name: lenet_300_100" in printed
    assert "== Config ==" in lth("run", "--help", cwd=tmp_path).stdout
    assert "commands:" in lth("--help", cwd=tmp_path).stdout
    assert not list(tmp_path.iterdir())
