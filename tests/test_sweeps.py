"""Sweeps and scale: sweep.json, a failed job in a sweep, launcher presets, requeued jobs, experiment presets."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FAST, lth, lth_in_process, lth_ok
from omegaconf import OmegaConf

from lth import config, sweeps, ui
from lth.errors import Interrupted, RunFailed
from lth.signals import StopSignals
from lth.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
WORKTREE = {"PYTHONPATH": str(ROOT)}  # `python -m lth` in a subprocess imports this checkout's lth
# The image presets after Frankle et al.'s protocols: five seeds each, to the sparsity of the paper's figures (the
# language-model presets, 3 seeds and 10 rounds sized for a CPU, are tested in test_language_model.py).
PRESETS = sorted(p.stem for p in (config.CONF_DIR / "experiment").glob("*.yaml") if "shakespeare" not in p.stem)
DENSE = [*FAST, "prune.rounds=0"]  # round 0 only


def record(sweep: Path) -> dict:
    return json.loads((sweep / sweeps.SWEEP_FILE).read_text())


def run_status(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["status"]


def test_a_failed_job_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    """Seed 0 crashes (a bug: any exception), seed 1 fails as lth fails (divergence); seed 2 still runs."""
    train = Trainer.run

    def failing(self, *args, **kwargs):
        if self.seed == 0:
            raise RuntimeError("simulated crash")
        if self.seed == 1:
            raise RunFailed("round 0: training loss became nan by step 3")
        return train(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", failing)
    sweep = tmp_path / "sweep"
    code, _, err = lth_in_process("run", "-m", "seed=0,1,2", *DENSE, f"hydra.sweep.dir={sweep}", capsys=capsys)

    assert code == 1
    assert "Traceback" in err and "RuntimeError: simulated crash" in err  # a crash keeps its traceback
    summary = err.strip().splitlines()[-1]
    assert summary == (
        "lth: error: 2 of 3 sweep jobs did not finish: #0 seed=0 (failed: RuntimeError: simulated crash); "
        f"#1 seed=1 (failed: round 0: training loss became nan by step 3); see {sweep / 'sweep.json'}"
    )
    sweep_record = record(sweep)
    assert sweep_record["status"] == "failed" and sweep_record["job_count"] == 3
    assert sweep_record["swept"] == {"seed": ["0", "1", "2"]} and sweep_record["base_overrides"] == DENSE
    jobs = sweep_record["jobs"]
    assert [job["status"] for job in jobs] == ["failed", "failed", "finished"]
    assert [job["dir"] for job in jobs] == [str(sweep / str(num)) for num in range(3)]
    assert [run_status(sweep / str(num)) for num in range(3)] == ["failed", "failed", "finished"]


@pytest.mark.slow  # several interpreters start: about 25 s
def test_joblib_preset_runs_jobs_side_by_side_sharing_the_cores(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**WORKTREE, "LTH_JOBS": "2"}
    run = lth(
        "run", "-m", "hydra/launcher=lth_joblib", "seed=0,1", *DENSE, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env
    )
    ours = [line for line in run.stdout.splitlines() if line.strip() and "[HYDRA]" not in line]
    assert ours and all(line.startswith(("[job 0 (seed=0)] ", "[job 1 (seed=1)] ")) for line in ours), ours
    jobs = record(sweep)["jobs"]
    assert [job["status"] for job in jobs] == ["finished", "finished"]
    assert {job["threads"] for job in jobs} == {max(1, sweeps.cores() // 2)}
    assert all(run_status(sweep / str(num)) == "finished" for num in (0, 1))


def test_lines_of_parallel_jobs_are_labelled_even_when_written_in_pieces():
    out = io.StringIO()
    labelled = ui.LabelledLines(out, "job 3 (seed=1)")
    labelled.write("round 0 ")
    labelled.write("done\nround 1 done\n\n")
    assert out.getvalue() == "[job 3 (seed=1)] round 0 done\n[job 3 (seed=1)] round 1 done\n\n"


@pytest.mark.slow  # several interpreters start: about 25 s
def test_submitit_local_preset_runs_real_submitit_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    lth(
        "run",
        "-m",
        "hydra/launcher=lth_submitit_local",
        "seed=0,1",
        *DENSE,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=WORKTREE,
    )
    assert list((sweep / ".submitit").glob("*/*_result.pkl")), "the jobs did not go through submitit"
    assert record(sweep)["status"] == "finished"
    assert all(run_status(sweep / str(num)) == "finished" for num in (0, 1))


def test_a_requeued_job_continues_its_run_instead_of_refusing_its_directory(tmp_path, capsys):
    """A requeued cluster job reruns the same Hydra job into the same directory, which holds the run it left."""
    sweep = tmp_path / "sweep"
    job = ["-m", "seed=0", *FAST, f"hydra.sweep.dir={sweep}"]
    lth_ok("run", *job, "prune.rounds=1", capsys=capsys)  # stopped after round 1 of 2
    run_dir = sweep / "0"
    published = {p: p.read_bytes() for p in run_dir.glob("round_*/*")}

    lth_ok("run", *job, capsys=capsys)  # the rerun
    assert all(p.read_bytes() == content for p, content in published.items()), "a finished round changed"
    assert sorted(p.name for p in run_dir.glob("round_*")) == ["round_00", "round_01", "round_02"]
    run_record = json.loads((run_dir / "run.json").read_text())
    assert run_record["status"] == "finished"
    assert [event["event"] for event in run_record["events"]] == ["started", "resumed"]

    # the same directory with a config that changes results is another experiment: refused, recorded
    code, _, err = lth_in_process("run", *job, "prune.rate=0.3", capsys=capsys)
    assert code == 1 and f"{run_dir} holds a run of another config (prune.rate (0.2 -> 0.3))" in err
    assert record(sweep)["jobs"][0]["status"] == "failed" and run_status(run_dir) == "finished"


@pytest.mark.parametrize("preset", PRESETS)
def test_experiment_presets_sweep_five_seeds_and_compose_valid_configs(preset):
    jobs = config.expand_sweep([f"+experiment={preset}"])
    assert sorted({job[0] for job in jobs}) == [f"seed={seed}" for seed in range(5)]
    cfg = config.compose(jobs[0])  # validated
    assert cfg.seed == 0 and cfg.prune.rounds >= 18
    header = (config.CONF_DIR / "experiment" / f"{preset}.yaml").read_text().splitlines()[1]
    assert "Frankle" in header and "20" in header  # cites its paper


def test_the_command_line_narrows_a_preset_sweep():
    assert config.expand_sweep(["+experiment=frankle2019_lenet", "seed=7"]) == [
        ["seed=7", "+experiment=frankle2019_lenet"]
    ]
    jobs = config.expand_sweep(["+experiment=frankle2019_lenet", "prune.rate=0.2,0.3"])
    assert len(jobs) == 10 and ["seed=4", "+experiment=frankle2019_lenet", "prune.rate=0.3"] in jobs


def test_a_bad_value_in_a_preset_sweep_fails_before_any_job(tmp_path, capsys):
    extra = tmp_path / "conf"
    (extra / "experiment").mkdir(parents=True)
    (extra / "experiment" / "bad.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 0,-1\n"
    )
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.searchpath=[file://{extra}]", "+experiment=bad", *DENSE, f"hydra.sweep.dir={sweep}"]
    code, _, err = lth_in_process("run", *args, capsys=capsys)
    assert code == 2
    assert err == "lth: error: seed=-1 is not allowed; seed must be an integer with 0 <= seed < 2**63\n"
    assert not sweep.exists()


def test_job_threads_share_the_cores(monkeypatch):
    monkeypatch.delenv("LTH_THREADS", raising=False)
    monkeypatch.setattr(sweeps, "cores", lambda: 8)
    assert sweeps.job_threads(OmegaConf.create({"n_jobs": 4})) == 2
    assert sweeps.job_threads(OmegaConf.create({"n_jobs": 16})) == 1
    assert sweeps.job_threads(OmegaConf.create({"n_jobs": -1})) == 1  # joblib's "every core"
    assert sweeps.job_threads(OmegaConf.create({"cpus_per_task": 6, "n_jobs": None})) == 6
    assert sweeps.job_threads(OmegaConf.create({"_target_": "basic"})) is None
    monkeypatch.setenv("LTH_THREADS", "3")
    assert sweeps.job_threads(None) == 3
    monkeypatch.delenv("LTH_JOBS", raising=False)
    assert sweeps.default_jobs() == 8
    monkeypatch.setenv("LTH_JOBS", "3")
    assert sweeps.default_jobs() == 3


def test_slurm_preset_asks_for_requeues_and_an_early_signal():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        composed = compose(
            "config", ["hydra/launcher=lth_slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    launcher = composed.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0 and launcher.gpus_per_node == 1


def test_sigusr2_stops_the_run_then_reaches_submitits_handler():
    """submitit's SIGUSR2 handler requeues and exits: it must run only after lth has saved its state."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(Interrupted), StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.received == signal.SIGUSR2 and not calls  # the run saves its state here, then stops
            raise Interrupted("stopped in round 0 at step 3")
        assert calls == [signal.SIGUSR2]
        with StopSignals():  # a run that finished anyway is not requeued
            os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow  # two joblib workers start and train: about 30 s
def test_joblib_jobs_stop_and_save_their_state_when_the_launcher_is_killed_alone(tmp_path):
    sweep = tmp_path / "sweep"
    long_rounds = [*FAST, "train.epochs=200", "checkpoint.every=0"]
    command = [sys.executable, "-m", "lth", "run", "-m", "hydra/launcher=lth_joblib", "seed=0,1", *long_rounds]
    launcher = subprocess.Popen(
        [*command, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env={**os.environ, **WORKTREE, "LTH_JOBS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = [sweep / str(num) for num in (0, 1)]
    deadline = time.monotonic() + 120
    while not all((run / "round_00").exists() or (run / "init.safetensors").exists() for run in runs):
        assert time.monotonic() < deadline, "the jobs never started"
        time.sleep(0.2)
    launcher.kill()  # the launcher alone, as `kill -9 PID` would: its workers are not signalled
    launcher.wait()
    while any(run_status(run) == "running" for run in runs):
        assert time.monotonic() < deadline + 60, [run_status(run) for run in runs]
        time.sleep(0.2)
    assert [run_status(run) for run in runs] == ["interrupted", "interrupted"]
    assert all(list((run / "state").glob("*.pt")) for run in runs), "each job saved its training state"
    while any((run / ".lock").exists() for run in runs):  # released once the run has stopped
        assert time.monotonic() < deadline + 60, "a run of an orphaned worker kept its lock"
        time.sleep(0.2)
