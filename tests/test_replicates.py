"""Batched replicates (`train.replicates=N`): N seeds trained together give each seed's run alone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from helpers import FAST, ROUNDING_ONLY, lth, lth_in_process, lth_ok, plan, prune_by_magnitude
from torch import nn

from lth import data
from lth.config import ModelConfig, PruneConfig, SyntheticDatasetConfig, TrainConfig, ViTModelConfig
from lth.errors import ConfigError
from lth.models import build, prunable_weights
from lth.prune import apply_masks, dense_masks
from lth.replicates import ReplicateBatch, check_model
from lth.train import Trainer

SEEDS = (3, 4, 5)


def replicate_trainer(seed: int, model_cfg: ModelConfig, train_cfg: TrainConfig, shape=(1, 28, 28)) -> Trainer:
    """Seed `seed`'s own data split, θ0 and magnitude-pruned mask (round 2 at rate 0.5), as a run alone has them."""
    dataset = data.load(
        SyntheticDatasetConfig(name="synthetic", train_size=400, test_size=100, val_size=50, input_shape=list(shape)),
        seed,
        torch.device("cpu"),
    )
    torch.manual_seed(seed)
    model = build(model_cfg, dataset.input_shape, dataset.num_classes)
    masks = prune_by_magnitude(
        {n: w.detach() for n, w in prunable_weights(model).items()},
        dense_masks(model),
        plan(model, PruneConfig(rate=0.5), dense_masks(model), 2),
    )
    apply_masks(model, masks)
    return Trainer(model, masks, dataset, train_cfg, seed=seed, round_index=2)


@pytest.fixture
def flush_denormals():
    """This tiny ResNet's batch-norm gradients reach denormal floats, which cost the CPU ~30x (60 s for 27 steps)."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """|ours - theirs| / |theirs|: about 1e-6 after a few batched steps, about 1 for another seed's tensor."""
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12))


@pytest.mark.parametrize(
    ("model_cfg", "train_cfg", "shape"),
    [
        (
            ModelConfig(name="lenet_300_100"),
            TrainConfig(lr=1e-3, batch_size=40, epochs=2, eval_every=4, lr_schedule="step", milestones=["10it"]),
            (1, 28, 28),
        ),
        (  # batch norm buffers, SGD with momentum and weight decay, a step schedule
            ModelConfig(name="resnet20", width=4),
            TrainConfig(
                optimizer="sgd",
                lr=0.01,
                momentum=0.9,
                weight_decay=1e-4,
                batch_size=40,
                epochs=1,
            ),
            (3, 8, 8),
        ),
        (  # attention: torch has no batching rule for its fused CPU kernel, so vmap runs it once per replicate
            ViTModelConfig(name="vit", width=16, patch_size=7, n_layer=1, n_head=2),
            TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=40, epochs=1),
            (1, 28, 28),
        ),
    ],
    ids=["lenet-adam", "resnet-bn-sgd", "vit-adamw"],
)
def test_each_replicate_equals_its_seed_trained_alone(model_cfg, train_cfg, shape, flush_denormals):
    # Batched kernels add in another order (a grouped convolution, a batched matmul): equal to float rounding,
    # which training amplifies (batch norm on tiny batches most), so the runs compared here are short.
    alone = [replicate_trainer(seed, model_cfg, train_cfg, shape) for seed in SEEDS]
    together = [replicate_trainer(seed, model_cfg, train_cfg, shape) for seed in SEEDS]
    solo_results = [trainer.run() for trainer in alone]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batched_results = ReplicateBatch(together).run()
    assert [str(warning.message) for warning in caught] == []  # nothing for a user to wonder about

    for seed, solo, batched, solo_result, batched_result in zip(
        SEEDS, alone, together, solo_results, batched_results, strict=True
    ):
        for name, value in solo.model.state_dict().items():  # weights and batch-norm statistics
            if name.endswith(ROUNDING_ONLY):
                continue
            assert relative_error(batched.model.state_dict()[name], value) < 1e-3, (seed, name)
        assert batched_result.steps == solo_result.steps == train_cfg.epochs * 9
        for ours, theirs in zip(batched_result.history, solo_result.history, strict=True):
            assert ours.step == theirs.step and ours.lr == theirs.lr
            assert ours.test_accuracy == pytest.approx(theirs.test_accuracy, abs=0.011), seed  # one example in 100
            assert ours.val_loss == pytest.approx(theirs.val_loss, rel=1e-4)
        # the optimiser state a checkpoint saves is the one this seed's own optimiser would hold
        saved, expected = batched.state_dict()["optimizer"], solo.optimizer.state_dict()
        assert saved["param_groups"] == expected["param_groups"]
        names = [name for name, _ in solo.model.named_parameters()]  # the state's keys are parameter positions
        for index, entry in expected["state"].items():
            if names[index].endswith(ROUNDING_ONLY):
                continue
            for key, value in entry.items():
                assert relative_error(saved["state"][index][key], value) < 1e-3, (seed, index, key)


def test_pruned_weights_stay_zero_in_every_replicate():
    trainers = [replicate_trainer(seed, ModelConfig(name="lenet_300_100"), TrainConfig(epochs=1)) for seed in SEEDS]
    ReplicateBatch(trainers).run()
    for trainer in trainers:
        for (name, weight), mask in zip(prunable_weights(trainer.model).items(), trainer.masks, strict=True):
            assert bool((weight[mask == 0] == 0).all()), name


def test_a_model_with_dropout_is_refused():
    check_model(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0)))  # p=0 draws nothing
    with pytest.raises(ConfigError, match=r"train\.replicates needs a model without dropout.*at 1"):
        check_model(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)))


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lth_run_with_replicates_writes_one_run_per_seed_equal_to_runs_alone(tmp_path, capsys):
    group = tmp_path / "group"
    out = lth_ok("run", *FAST, "seed=7", "train.replicates=2", f"hydra.run.dir={group}", capsys=capsys)
    assert "seed 8  round  2" in out
    alone = tmp_path / "alone"
    lth_ok("run", *FAST, "seed=8", f"hydra.run.dir={alone}", capsys=capsys)

    assert sorted(p.name for p in group.iterdir() if not p.name.startswith(".")) == ["seed_7", "seed_8"]
    record = json.loads((group / "seed_8" / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["seed"] == 8
    for ours, theirs in zip(rows(group / "seed_8"), rows(alone), strict=True):
        assert ours["density"] == theirs["density"]
        assert ours["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=0.011)
    # the report groups the replicates like any two seeds of one configuration
    report = json.loads(lth_ok("report", str(group), "--json", capsys=capsys))
    assert sorted({row["seed"] for row in report}) == [7, 8]
    # resumed (here: extended by a round), the group trains on together, not one seed after the other
    out = lth_ok("resume", str(group), "prune.rounds=3", capsys=capsys)
    assert "seed 7  round  3" in out and "seed 8  round  3" in out and "mean ± std over 2 seeds" in out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.replicates=0", "train.replicates=0 is not allowed; train.replicates must be an integer >= 1"),
        ("train.precision=fp16", "train.precision must be 32 or bf16 with train.replicates=2"),
        ("train.compile=true", "train.compile=True is not allowed; train.compile must be false with"),
    ],
)
def test_settings_that_would_couple_replicates_are_refused(tmp_path, capsys, override, message):
    code, _, err = lth_in_process(
        "run", *FAST, "train.replicates=2", override, f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # three interpreters start and train: about 15 s
def test_a_stopped_replicate_group_resumes_each_run_to_the_uninterrupted_result(tmp_path):
    args = [*FAST, "train.replicates=2", "checkpoint.every=0", "train.batch_size=20", "train.eval_every=25"]
    reference = tmp_path / "reference"
    lth("run", *args, f"hydra.run.dir={reference}", cwd=tmp_path)

    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *args, f"hydra.run.dir={stopped}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (stopped / "seed_1" / "round_00").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert f"Resume: lth resume {stopped}" in output
    states = {seed: sorted(p.name for p in (stopped / f"seed_{seed}" / "state").glob("*.pt")) for seed in (0, 1)}

    lth("resume", str(stopped), cwd=tmp_path)
    for seed in (0, 1):
        for ours, theirs in zip(rows(stopped / f"seed_{seed}"), rows(reference / f"seed_{seed}"), strict=True):
            assert ours["density"] == theirs["density"], states
            # the group trains on together from its saved states (optimiser state included): the same numbers
            assert ours["test_accuracy"] == theirs["test_accuracy"], states
            assert ours.get("val_loss") == theirs.get("val_loss"), states


def test_a_batch_resumed_part_way_goes_on_from_each_replicates_saved_optimiser_state():
    """Stopped after 4 steps, each replicate saves its state (its slice of the batched Adam's); a new batch built
    from trainers that loaded those states ends exactly where the batch never stopped ends."""
    from lth.errors import Interrupted

    model_cfg, cfg = ModelConfig(name="lenet_300_100"), TrainConfig(optimizer="adam", lr=1e-3, batch_size=40, epochs=1)

    def trainers() -> list[Trainer]:
        return [replicate_trainer(seed, model_cfg, cfg) for seed in SEEDS[:2]]

    def stop_at_4(trainer: Trainer) -> None:
        if trainer.step == 4:
            raise Interrupted("stopped")

    uninterrupted, stopped = trainers(), trainers()
    ReplicateBatch(uninterrupted).run()
    with pytest.raises(Interrupted):
        ReplicateBatch(stopped).run(after_step=[stop_at_4, stop_at_4])
    states = [trainer.state_dict() for trainer in stopped]
    resumed = trainers()
    for trainer, state in zip(resumed, states, strict=True):
        trainer.load_state_dict(state)
    ReplicateBatch(resumed).run()
    for ours, theirs in zip(resumed, uninterrupted, strict=True):
        assert ours.step == theirs.step and ours.step > 4
        assert all(torch.equal(a, b) for a, b in zip(ours.model.parameters(), theirs.model.parameters(), strict=True))
