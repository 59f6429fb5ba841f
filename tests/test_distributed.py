"""Data parallel training: two torchrun ranks on gloo train the weights one process trains with the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FAST, ROUNDING_ONLY, lth_ok, tiny_gpt, write_text_corpus
from safetensors.torch import load_file
from torch import nn

from lth import distributed

ROOT = Path(__file__).resolve().parent.parent
# 496 training examples in batches of 45: every batch splits unevenly over 2 ranks, and the last (1 example)
# leaves rank 1 none at all.
UNEVEN = [*FAST, "dataset.train_size=596", "train.batch_size=45", "prune.rounds=1", "device=cpu"]
TOLERANCE = 5e-5  # measured: at most ~1e-5 apart after two rounds (summation order differs)


@pytest.mark.slow  # two ranks and a reference run: about 20 s each
@pytest.mark.parametrize("model", ["lenet", "gpt"])
def test_two_ranks_train_the_weights_one_process_trains(tmp_path, capsys, model):
    ranks, single = tmp_path / "ranks", tmp_path / "single"
    corpus = write_text_corpus(tmp_path.parent / f"{tmp_path.name}.txt")  # beside tmp_path, which must hold 2 runs
    args = UNEVEN if model == "lenet" else tiny_gpt(corpus, "device=cpu")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "lth", "run"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # this checkout's lth in every rank
    result = subprocess.run(
        [*command, *args, f"hydra.run.dir={ranks}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lth_ok("run", *args, f"hydra.run.dir={single}", capsys=capsys)

    assert result.stdout.count("round  1  density") == 1, "only rank 0 prints"
    assert json.loads((ranks / "run.json").read_text())["status"] == "finished"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks", "single"], "a rank wrote elsewhere"
    for round_name in ("round_00", "round_01"):
        ours, theirs = (load_file(d / round_name / "final.safetensors") for d in (ranks, single))
        masks = [load_file(d / round_name / "mask.safetensors") for d in (ranks, single)]
        assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[1]), f"{round_name}: masks differ"
        gaps = {k: (ours[k] - theirs[k]).abs().max().item() for k in theirs if not k.endswith(ROUNDING_ONLY)}
        worst = max(gaps, key=gaps.get)
        assert gaps[worst] < TOLERANCE, f"{round_name}: final weights {gaps[worst]:.2e} apart at {worst}"


def test_a_single_process_is_a_world_of_one():
    batch = torch.arange(7)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard(batch) is batch
    model = nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    before = model.weight.grad.clone()
    distributed.sum_gradients(model, 0.5)  # nothing to sum with, nothing to weight
    assert torch.equal(model.weight.grad, before)
    assert distributed.main_only(lambda: "written")() == "written"
