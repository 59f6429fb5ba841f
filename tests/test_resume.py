"""Crash-proof runs: kill -9 at random moments, resume, and get the uninterrupted run bit for bit."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FAST, lth, lth_in_process, lth_ok, tiny_gpt, write_text_corpus
from safetensors.torch import load_file

from lth.checkpoint import save_state, update_run_record

# 3 rounds of 36 steps each, a state every 5 steps: a kill lands mid-round most of the time.
KILLABLE = [*FAST, "dataset.train_size=1300", "train.epochs=3", "checkpoint.every=5it", "checkpoint.keep=2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, never interrupted."""
    folder = tmp_path_factory.mktemp("reference")
    lth("run", *KILLABLE, f"hydra.run.dir={folder / 'run'}", cwd=folder)
    return folder / "run"


def assert_same_results(run_dir: Path, reference: Path) -> None:
    rounds = sorted(p.name for p in reference.glob("round_*"))
    assert sorted(p.name for p in run_dir.glob("round_*")) == rounds
    for name in rounds:
        for tensors in ("mask", "start", "final"):
            ours, theirs = (load_file(d / name / f"{tensors}.safetensors") for d in (run_dir, reference))
            assert ours.keys() == theirs.keys()
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"{name}/{tensors} differs after resume"
        ours, theirs = (json.loads((d / name / "metrics.json").read_text()) for d in (run_dir, reference))
        for metrics in (ours, theirs):
            metrics.pop("seconds"), metrics.pop("train_seconds")
            if "taken_from" in metrics:  # the job of its own sweep it took round 0 from, wherever the sweep lies,
                taken = metrics["taken_from"]  # and the tensors' checksums (its metrics.json holds its own timings)
                taken["run"] = Path(taken["run"]).name
                taken["checksums"] = {k: v for k, v in taken["checksums"].items() if k.endswith(".safetensors")}
        assert ours == theirs, f"{name}/metrics.json differs after resume"


def kill_during_training(args: list[str], cwd: Path, run_dir: Path, seconds: float) -> None:
    """Start `lth run`, wait until it trains (its first state is saved), then SIGKILL it `seconds` later."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *args, f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "state").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
    process.wait()


def kill_and_resume(
    tmp_path: Path, reference: Path, delay: float, index: int, capsys, args: list[str] = KILLABLE
) -> str:
    run_dir = tmp_path / f"killed_{index}"
    kill_during_training(args, tmp_path, run_dir, delay)
    done = len(list(run_dir.glob("round_*")))
    states = sorted(p.name for p in (run_dir / "state").glob("*.pt")) if (run_dir / "state").is_dir() else []
    published = {p: p.read_bytes() for p in run_dir.glob("round_*/*")}
    if (run_dir / "run.json").exists():
        lth_ok("resume", str(run_dir), capsys=capsys)
        assert all(p.read_bytes() == content for p, content in published.items()), "a finished round changed"
    else:  # killed before the run wrote anything of its own: start it again
        lth("run", *args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_same_results(run_dir, reference)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert not (run_dir / "state").exists() and not (run_dir / ".lock").exists()
    return f"killed {delay:.2f}s into training: {done} rounds published, states {states}"


# Once the first state is saved, the 3 rounds take about 2 s more on 2 cores.
@pytest.mark.parametrize("delay", [0.3, pytest.param(1.1, marks=pytest.mark.slow)])
def test_kill_9_mid_run_then_resume_is_bit_identical(tmp_path, reference, delay, capsys):
    kill_and_resume(tmp_path, reference, delay, 0, capsys)


@pytest.mark.slow  # its own reference run, then the killed one; the kill must land after a mask update
def test_kill_9_mid_rigl_round_then_resume_is_bit_identical(tmp_path, capsys):
    """The mask RigL has grown so far is part of the training state: a kill between its updates, then a resume,
    gives the uninterrupted run's masks, weights and update history."""
    args = [*KILLABLE, "prune=rigl", "prune.rounds=0", "train.epochs=8", "prune.update_every=7"]  # 192 steps
    reference = tmp_path / "reference"
    lth_ok("run", *args, f"hydra.run.dir={reference}", capsys=capsys)
    run_dir = tmp_path / "killed"
    kill_during_training(args, tmp_path, run_dir, 0.4)
    states = [json.loads(p.read_text())["step"] for p in (run_dir / "state").glob("*.json")]
    assert not (run_dir / "round_00").exists() and max(states) > 7, "the kill did not land after a mask update"
    lth_ok("resume", str(run_dir), capsys=capsys)
    assert_same_results(run_dir, reference)
    updates = json.loads((run_dir / "round_00" / "metrics.json").read_text())["mask_updates"]
    assert len(updates) == 20  # after steps 7, 14, ..., 140 < 0.75 x 192


@pytest.mark.slow  # about 20 s on 2 cores: its own reference run, then the killed one
def test_kill_9_mid_run_of_a_language_model_then_resume_is_bit_identical(tmp_path, capsys):
    """The seeded window order, AdamW's moments and the rewind point survive a kill of a GPT run (issue 20)."""
    corpus = write_text_corpus(tmp_path / "corpus.txt")
    args = tiny_gpt(corpus, "train.epochs=3", "checkpoint.every=5it")
    lth("run", *args, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    kill_and_resume(tmp_path, tmp_path / "reference", 0.5, 0, capsys, args)


@pytest.mark.slow
def test_kill_9_at_ten_random_moments(tmp_path, reference, capsys):
    rng = random.Random(2026)
    outcomes = [kill_and_resume(tmp_path, reference, rng.uniform(0.0, 1.8), i, capsys) for i in range(10)]
    with capsys.disabled():
        print("\n" + "\n".join(outcomes))


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["ctrl-c", "pre-emption"]
)
def test_a_signal_mid_round_saves_the_state_and_resume_continues_from_it(tmp_path, reference, signum, capsys):
    run_dir = tmp_path / "run"
    args = [*KILLABLE, "checkpoint.every=0", f"hydra.run.dir={run_dir}"]  # only the signal writes a state
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "round_00").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # into round 1
    process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert f"lth resume {run_dir}" in out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    stopped_at = re.search(r"stopped in round (\d+) at step (\d+)", out)
    if stopped_at:  # mid-round: exactly that step's state was written
        round_index, step = map(int, stopped_at.groups())
        assert (run_dir / "state" / f"round_{round_index:02d}.step_{step:07d}.pt").is_file()
    else:  # the signal came between rounds
        assert re.search(r"stopped after round \d+", out), out
    lth_ok("resume", str(run_dir), "checkpoint.every=0", capsys=capsys)
    assert_same_results(run_dir, reference)


def truncate(state: Path) -> None:
    state.write_bytes(state.read_bytes()[:-7])


def forge(state: Path) -> None:
    """A pickle that is no tensor state (weights_only refuses its class), its sidecar's checksum made to fit."""
    forged = pickle.dumps(Path("not-a-state"))
    state.write_bytes(forged)
    state.with_suffix(".json").write_text(json.dumps({"sha256": hashlib.sha256(forged).hexdigest()}))


@pytest.mark.parametrize(("damage", "named"), [(truncate, "is corrupted"), (forge, "is not a state lth wrote")])
def test_a_damaged_newest_state_falls_back_to_the_previous_one(tmp_path, reference, capsys, damage, named):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    # Make it an interrupted run: drop the last round and plant two states of it, the newer one damaged.
    shutil.rmtree(run_dir / "round_02")
    update_run_record(run_dir, status="interrupted", rounds_finished=2)
    state = {"model": {}, "optimizer": {}, "step": 0}  # never loaded if the checks work: see below
    newest = save_state(run_dir, 2, 10, state, keep=2)
    older = save_state(run_dir, 2, 5, state, keep=2)
    damage(newest)
    older.unlink()  # and the older one lost: the round restarts from its beginning
    older.with_suffix(".json").unlink()
    printed = lth_ok("resume", str(run_dir), capsys=capsys)
    assert f"{newest} {named}" in printed.replace("\n", "")
    assert_same_results(run_dir, reference)


def test_resume_extends_a_finished_run_and_refuses_other_changes(fast_run, tmp_path, capsys):
    before = {p: p.read_bytes() for p in fast_run.glob("round_*/*")}
    code, _, err = lth_in_process("resume", str(fast_run), "prune.rate=0.3", "train.epochs=2", capsys=capsys)
    assert code == 2
    assert err.strip() == (
        "lth: error: resume would change prune.rate (0.2 -> 0.3), train.epochs (1 -> 2); only prune.rounds, ui.*, "
        "checkpoint.* and logger may change (add --force to change anyway; it is recorded in run.json)"
    )
    lth_ok("resume", str(fast_run), "prune.rounds=4", capsys=capsys)
    rows = json.loads(lth_ok("report", str(fast_run), "--json", capsys=capsys))
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(p.read_bytes() == content for p, content in before.items())
    record = json.loads((fast_run / "run.json").read_text())
    assert record["events"][-1]["changes"] == {"prune.rounds": [2, 4]}
    assert record["config"]["prune"]["rounds"] == 4


def test_forced_change_is_recorded_and_divergence_fails_the_run_keeping_finished_rounds(fast_run, capsys):
    before = {p: p.read_bytes() for p in fast_run.glob("round_*/*")}
    code, _, err = lth_in_process("resume", str(fast_run), "prune.rounds=3", "train.lr=1e30", "--force", capsys=capsys)
    assert code == 1
    assert err.startswith("lth: error: round 3: training loss became") and len(err.splitlines()) == 1
    record = json.loads((fast_run / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["events"][-1]["changes"] == {"prune.rounds": [2, 3], "train.lr": [0.0012, 1e30]}
    assert all(p.read_bytes() == content for p, content in before.items())
    assert not (fast_run / "round_03").exists()


@pytest.mark.slow  # the sweep.json resume test below covers it in-process, faster
def test_resume_of_a_sweep_folder_finishes_the_unfinished_runs(tmp_path, reference, capsys):
    sweep = tmp_path / "sweep"
    finished = sweep / "0"
    shutil.copytree(reference, finished)
    stopped = sweep / "1"
    kill_during_training(KILLABLE, tmp_path, stopped, 0.5)
    untouched = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
    printed = lth_ok("resume", str(sweep), capsys=capsys)
    assert f"{finished}: finished, skipped" in printed
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == untouched
    assert_same_results(stopped, reference)


def test_a_live_lock_keeps_a_second_process_off_and_a_dead_holders_lock_is_free(fast_run, tmp_path, capsys):
    # a real holder: another process that takes the lock the way lth does and keeps it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from lth.checkpoint import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)",
            str(fast_run),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    code, _, err = lth_in_process("resume", str(fast_run), "prune.rounds=3", capsys=capsys)
    assert code == 2
    assert f"is in use by pid {holder.pid} on {socket.gethostname()}" in err
    assert not (fast_run / "round_03").exists()
    holder.kill()  # dies holding the lock, its .lock file left behind: the kernel has released the lock
    holder.wait()
    assert (fast_run / ".lock").exists()
    lth_ok("resume", str(fast_run), "prune.rounds=3", capsys=capsys)
    assert (fast_run / "round_03").is_dir() and not (fast_run / ".lock").exists()


@pytest.mark.parametrize("damaged", ["round_02/final.safetensors", "init.safetensors", "rewind.safetensors"])
def test_a_corrupted_finished_file_is_named(fast_run, capsys, damaged):
    path = fast_run / damaged
    path.write_bytes(path.read_bytes()[:100])
    code, _, err = lth_in_process("resume", str(fast_run), "prune.rounds=3", capsys=capsys)
    assert code == 1
    assert err.strip() == f"lth: error: {path} is missing or corrupted (its SHA-256 does not match checksums.json)"
    assert not (fast_run / "round_03").exists()


@pytest.mark.slow  # a real interpreter start and a SIGTERM: about 5 s
def test_a_run_stopped_during_start_up_is_resumable(tmp_path, reference):
    """SIGTERM as soon as Hydra has recorded the run's command (imports, data, model still to come): one line, exit
    130, and `lth resume` trains the whole run, the same as one never stopped."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *KILLABLE, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (run_dir / ".hydra" / "overrides.yaml").exists() and process.poll() is None:  # Hydra's last file
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert "interrupted" in (out + err)  # in one line, whichever stage of start-up (or the first steps) it hit
    assert not list(run_dir.glob("round_*"))
    lth("resume", str(run_dir), cwd=tmp_path)
    assert_same_results(run_dir, reference)


def test_resume_of_a_sweep_finishes_every_job_whenever_it_stopped(sweep_template, tmp_path, capsys):
    """Job 1 stopped between rounds, job 2 killed before lth recorded its run (Hydra's .hydra/ only), job 3 never
    started: `lth resume SWEEP` finishes all of them as an uninterrupted sweep did, and keeps sweep.json true."""
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_template, sweep)  # sweep.json still names the template's folders: they stay untouched
    before = {p: p.stat().st_mtime_ns for p in sweep_template.rglob("*")}
    record = json.loads((sweep / "sweep.json").read_text())
    shutil.rmtree(sweep / "1" / "round_02")
    update_run_record(sweep / "1", status="interrupted", rounds_finished=2)
    for path in (sweep / "2").iterdir():
        if path.name != ".hydra":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(sweep / "3")
    for num, status in ((1, "interrupted"), (2, "running"), (3, "pending")):
        record["jobs"][num].update(status=status, **({"dir": None} if num == 3 else {}))
    (sweep / "sweep.json").write_text(json.dumps({**record, "status": "running"}))
    printed = lth_ok("resume", str(sweep), capsys=capsys)
    assert f"{sweep / '0'}: finished, skipped" in printed.replace("\n", "")
    for job in ("1", "2", "3"):
        assert_same_results(sweep / job, sweep_template / job)
    resumed = json.loads((sweep / "sweep.json").read_text())
    assert resumed["status"] == "finished" and all(job["status"] == "finished" for job in resumed["jobs"])
    assert [job["dir"] for job in resumed["jobs"]][1:] == [str(sweep / job) for job in ("1", "2", "3")]
    assert {p: p.stat().st_mtime_ns for p in sweep_template.rglob("*")} == before


@pytest.mark.slow  # three trainings: about 5 s
def test_resume_finishes_every_replicate_of_a_group(tmp_path, capsys):
    """`train.replicates=2` stopped when only seed_0's run was recorded: resume trains seed_1 too."""
    group = tmp_path / "group"
    lth_ok("run", *FAST, "train.replicates=2", f"hydra.run.dir={group}", capsys=capsys)
    shutil.rmtree(group / "seed_1")
    lth_ok("resume", str(group), capsys=capsys)
    assert json.loads((group / "seed_1" / "run.json").read_text())["status"] == "finished"
    lth_ok("run", *FAST, "seed=1", f"hydra.run.dir={tmp_path / 'alone'}", capsys=capsys)
    assert_same_results(group / "seed_1", tmp_path / "alone")  # seed_1 now trained alone, as such a run does


def test_a_full_disk_is_one_line_and_resume_finishes_the_run(tmp_path, finished_template, capsys, monkeypatch):
    """The disk fills while round 1 is published (ENOSPC from fsync, as a full filesystem gives it): one line that
    names the file, exit 1, round 0 intact; once there is space, resume finishes as if nothing had happened."""
    real_fsync = os.fsync

    def full_disk_in_round_1(fd: int) -> None:
        if "round_01" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(os, "fsync", full_disk_in_round_1)
    code, _, err = lth_in_process("run", *FAST, f"hydra.run.dir={run_dir}", capsys=capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "no space left on the device: " in err and "round_01.partial/" in err and f"lth resume {run_dir}" in err
    assert sorted(p.name for p in run_dir.glob("round_*")) == ["round_00"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    lth_ok("resume", str(run_dir), capsys=capsys)
    assert_same_results(run_dir, finished_template)
