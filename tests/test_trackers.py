"""`logger=tensorboard|mlflow|wandb` (lth.trackers): the live stream while a round trains, the rounds' summaries at
publish, and a resumed run that continues the same tracker run without sending a point twice.

The shared stream logic (steps already sent, the state file, summaries) is tested through TensorBoard, which the
dev install has; MLflow (file store) and W&B (offline) are optional extras: their tests skip without them and,
at several seconds each (the packages' import alone), are marked slow. None needs the network."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import pytest
from helpers import FAST, lth_in_process, lth_ok

from lth.checkpoint import update_run_record

# 50 steps a round: the running training loss every 20 steps and at the epoch's end, an evaluation every 5
STREAMED = [*FAST, "prune.rounds=1", "train.batch_size=10"]


def round_metrics(run_dir: Path, round_index: int) -> dict:
    return json.loads((run_dir / f"round_{round_index:02d}" / "metrics.json").read_text())


def retrain_round(run_dir: Path, round_index: int, capsys: pytest.CaptureFixture[str], *overrides: str) -> None:
    """As if the process was killed in round `round_index` before it saved a state, after its tracker got the
    round's points: the round is trained again (bit for bit the same) by `lth resume`."""
    shutil.rmtree(run_dir / f"round_{round_index:02d}")
    update_run_record(run_dir, status="interrupted", rounds_finished=round_index)
    lth_ok("resume", str(run_dir), *overrides, capsys=capsys)


def test_tensorboard_streams_every_evaluation_and_a_retrained_round_sends_nothing_twice(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    lth_ok("run", *STREAMED, "logger=tensorboard", f"hydra.run.dir={run_dir}", capsys=capsys)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = [round_metrics(run_dir, r) for r in (0, 1)]
    evaluations = [line for line in lines if line["kind"] == "evaluation"]
    assert [(e["round"], e["step"]) for e in evaluations] == [
        (m["round"], e["step"]) for m in metrics for e in m["history"]
    ]
    assert all(e["train_loss"] > 0 for e in evaluations)  # the loss on a fixed sample of the training split
    assert [line["test_accuracy"] for line in lines if line["kind"] == "round"] == [m["test_accuracy"] for m in metrics]
    retrain_round(run_dir, 1, capsys)

    summary = EventAccumulator(str(run_dir / "tensorboard" / "rounds"))
    summary.Reload()
    rounds = summary.Scalars("rounds/test_accuracy")
    assert [s.step for s in rounds] == [0, 1]
    assert [s.value for s in rounds] == pytest.approx([m["test_accuracy"] for m in metrics])
    live = EventAccumulator(str(run_dir / "tensorboard" / "round_01"))  # written while round 1 trained
    live.Reload()
    history = round_metrics(run_dir, 1)["history"]
    assert [s.step for s in live.Scalars("test/accuracy")] == [e["step"] for e in history]
    assert [s.value for s in live.Scalars("val/loss")] == pytest.approx([e["val_loss"] for e in history])
    assert [s.value for s in live.Scalars("train_sample/loss")] == pytest.approx([e["train_loss"] for e in history])
    assert [s.step for s in live.Scalars("train/loss")] == [20, 40, 50]
    assert all(s.value > 0 for s in live.Scalars("train/loss"))
    state = json.loads((run_dir / "tensorboard.json").read_text())
    assert state["sent"] == {"round_00/train": 50, "round_00/evaluation": 50, "round_01/train": 50,
                             "round_01/evaluation": 50, "rounds": 1}  # fmt: skip


def test_each_batched_replicate_streams_its_own_curves(tmp_path, capsys):
    """`train.replicates=2`: each seed's run gets its own live stream, its own running loss and evaluations."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    group = tmp_path / "group"
    lth_ok("run", *STREAMED, "prune.rounds=0", "train.replicates=2", "logger=tensorboard", f"hydra.run.dir={group}",
           capsys=capsys)  # fmt: skip
    curves = []
    for seed in ("seed_0", "seed_1"):
        live = EventAccumulator(str(group / seed / "tensorboard" / "round_00"))
        live.Reload()
        history = round_metrics(group / seed, 0)["history"]
        assert [s.value for s in live.Scalars("val/loss")] == pytest.approx([e["val_loss"] for e in history])
        assert [s.step for s in live.Scalars("train/loss")] == [20, 40, 50]
        curves.append([s.value for s in live.Scalars("train/loss")])
    assert curves[0] != curves[1]  # each seed's own running loss, not their mean


def test_a_logger_whose_package_is_missing_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    run_dir = tmp_path / "run"
    code, out, err = lth_in_process("run", *FAST, "logger=mlflow", f"hydra.run.dir={run_dir}", capsys=capsys)
    assert (code, out) == (2, "")
    assert err == "lth: error: logger=mlflow needs the mlflow-skinny package: pip install 'lth[mlflow]'\n"
    assert not run_dir.exists()


@pytest.mark.slow  # mlflow's import alone takes 2 s
def test_mlflow_file_store_holds_one_run_that_a_resume_continues(tmp_path, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    lth_ok("run", *STREAMED, "logger=mlflow", "logger_project=tickets", f"hydra.run.dir={run_dir}", capsys=capsys)
    retrain_round(run_dir, 1, capsys, "prune.rounds=2")  # round 1 again, then a new round 2

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tickets").experiment_id])
    assert run.info.run_id == json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params["prune.rate"] == "0.2" and run.data.params["prune.rounds"] == "1"
    assert run.data.tags["resumed.prune.rounds"] == "2"

    def history(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    assert [step for step, _ in history("rounds/test_accuracy")] == [0, 1, 2]
    assert [v for _, v in history("rounds/density")] == pytest.approx([round_metrics(run_dir, r)["density"]
                                                                       for r in (0, 1, 2)])  # fmt: skip
    for round_index in (1, 2):
        evaluations = round_metrics(run_dir, round_index)["history"]
        assert history(f"round_{round_index:02d}/test/accuracy") == [
            (e["step"], pytest.approx(e["test_accuracy"])) for e in evaluations
        ]
        assert [step for step, _ in history(f"round_{round_index:02d}/train/loss")] == [20, 40, 50]


def wandb_history(run_dir: Path) -> tuple[set[str], list[dict[str, float]]]:
    """The run ids and history rows of every offline W&B segment under `run_dir`, in the order they were written
    (W&B's transaction log: a 7-byte header, then 32 KiB blocks of records, each a checksum, a length, a type)."""
    from wandb.proto import wandb_internal_pb2

    ids, rows = set(), []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        data, position, pending = path.read_bytes(), 7, b""
        while position + 7 <= len(data):
            if (left := 32768 - position % 32768) < 7:
                position += left
                continue
            _, length, kind = struct.unpack("<IHB", data[position : position + 7])
            if kind == 0:
                break
            pending += data[position + 7 : position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # a full record, or the last piece of one
                record = wandb_internal_pb2.Record.FromString(pending)
                pending = b""
                if record.HasField("run"):
                    ids.add(record.run.run_id)
                if record.HasField("history"):
                    rows.append({item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
                                 for item in record.history.item})  # fmt: skip
    return ids, rows


@pytest.mark.slow  # wandb's start-up alone takes seconds
def test_wandb_offline_run_that_a_resume_continues(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    for variable in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "home"))
    run_dir = tmp_path / "run"
    lth_ok("run", *STREAMED, "logger=wandb", f"hydra.run.dir={run_dir}", capsys=capsys)
    retrain_round(run_dir, 1, capsys)

    ids, rows = wandb_history(run_dir)
    assert ids == {json.loads((run_dir / "wandb.json").read_text())["id"]}
    assert [row["_step"] for row in rows] == list(range(len(rows)))  # W&B's step counts on across the resume
    evaluations = round_metrics(run_dir, 1)["history"]
    streamed = [(row["train_step"], row["round_01/val/loss"]) for row in rows if "round_01/val/loss" in row]
    assert streamed == [(e["step"], pytest.approx(e["val_loss"])) for e in evaluations]
    assert [row["train_step"] for row in rows if "round_01/train/loss" in row] == [20, 40, 50]
    assert [row["round"] for row in rows if "rounds/test_accuracy" in row] == [0, 1]
