"""The lottery-ticket controls and variants: pruning criteria and what survivors are reset to."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import FAST, lth_ok
from safetensors.torch import load_file

from lth.prune import PruneGroup, criterion_scores, prune_by_score


def test_magnitude_increase_keeps_the_weights_that_grew_most():
    init = {"w": torch.tensor([1.0, -1.0, 0.1, 2.0])}
    final = {"w": torch.tensor([1.5, -0.5, -0.9, 2.1])}  # growth of |w|: 0.5, -0.5, 0.8, 0.1
    masks = {"w": torch.ones(4, dtype=torch.bool)}
    scores = criterion_scores("magnitude_increase", final, init, masks, torch.Generator())
    kept = prune_by_score(scores, masks, [PruneGroup(("w",), 0.5)], 1)["w"]
    assert kept.tolist() == [True, False, True, False]


def test_random_scores_are_seeded_and_keep_the_planned_counts():
    masks = {"a": torch.ones(100, dtype=torch.bool), "b": torch.ones(40, dtype=torch.bool)}
    groups = [PruneGroup(("a",), 0.2), PruneGroup(("b",), 0.5)]

    def random_masks(seed: int) -> dict[str, torch.Tensor]:
        scores = criterion_scores("random", {}, {}, masks, torch.Generator().manual_seed(seed))
        return prune_by_score(scores, masks, groups, 2)

    first, again, other = random_masks(0), random_masks(0), random_masks(1)
    assert int(first["a"].sum()) == 64 and int(first["b"].sum()) == 10
    assert all(torch.equal(first[n], again[n]) for n in masks)
    assert not torch.equal(first["a"], other["a"])


@pytest.fixture
def method_run(tmp_path, capsys):
    def run(*overrides: str):
        run_dir = tmp_path / re.sub(r"[^\w.-]+", "_", "_".join(overrides))
        lth_ok("run", *FAST, "prune.rounds=1", *overrides, f"hydra.run.dir={run_dir}", capsys=capsys)
        return run_dir

    return run


def tensors(run_dir, round_index: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"round_{round_index:02d}" / f"{name}.safetensors")


def test_random_pruning_control_matches_the_tickets_layer_densities(method_run, finished_template):
    control = method_run("prune.criterion=random")
    ticket_mask, control_mask = tensors(finished_template, 1, "mask"), tensors(control, 1, "mask")
    for name, keep in ticket_mask.items():
        assert int(control_mask[name].sum()) == int(keep.sum())
        assert not torch.equal(control_mask[name], keep)
    # survivors are still rewound to the same initialisation as the ticket's
    rewind = load_file(control / "rewind.safetensors")
    start = tensors(control, 1, "start")
    assert all(torch.equal(start[n], torch.where(m, rewind[n], 0)) for n, m in control_mask.items())


def test_reinit_control_keeps_the_ticket_mask_with_new_initial_values(method_run, finished_template):
    control = method_run("prune.retrain=reinit")
    ticket_mask, control_mask = tensors(finished_template, 1, "mask"), tensors(control, 1, "mask")
    assert all(torch.equal(control_mask[n], ticket_mask[n]) for n in ticket_mask)
    rewind, start = load_file(control / "rewind.safetensors"), tensors(control, 1, "start")
    for name, keep in control_mask.items():
        assert not torch.equal(start[name][keep], rewind[name][keep]), "reinit reused the original init"
        assert abs(start[name][keep].std() / rewind[name].std() - 1) < 0.1, "not drawn from the init distribution"
    metrics = json.loads((control / "round_01" / "metrics.json").read_text())
    assert all(metrics["checks"].values())


def test_finetune_continues_from_the_trained_weights(method_run):
    run_dir = method_run("prune.retrain=finetune")
    final_0, start_1, mask_1 = tensors(run_dir, 0, "final"), tensors(run_dir, 1, "start"), tensors(run_dir, 1, "mask")
    for name, value in start_1.items():
        expected = torch.where(mask_1[name], final_0[name], 0) if name in mask_1 else final_0[name]
        assert torch.equal(value, expected)


def test_late_rewinding_saves_theta_k_in_round_0_and_goes_on_from_step_k(method_run, finished_template):
    late = method_run("train.epochs=2", "prune.rewind_to=1ep")
    # θk after epoch 1 of a 2-epoch round is the final state of the 1-epoch template run (same init, same order)
    rewind, template_final = load_file(late / "rewind.safetensors"), tensors(finished_template, 0, "final")
    assert all(torch.equal(rewind[n], template_final[n]) for n in template_final)
    init = load_file(late / "init.safetensors")
    assert all(torch.equal(init[n], v) for n, v in tensors(late, 0, "start").items())
    start_1, mask_1 = tensors(late, 1, "start"), tensors(late, 1, "mask")
    assert all(torch.equal(start_1[n], torch.where(m, rewind[n], 0)) for n, m in mask_1.items())
    history = [json.loads((late / f"round_{r:02d}" / "metrics.json").read_text())["history"] for r in (0, 1)]
    assert [e["step"] for e in history[0]] == [5, 10, 15, 20]
    assert [e["step"] for e in history[1]] == [15, 20], "round 1 should train steps 11-20 only"


def test_lr_rewind_keeps_the_trained_weights_and_replays_the_schedule_from_step_k(method_run):
    schedule = ["train.epochs=2", "train.lr_schedule=step", "train.milestones=[1ep]", "prune.rewind_to=4it"]
    run_dir = method_run("prune.retrain=lr_rewind", *schedule)
    final_0, start_1, mask_1 = tensors(run_dir, 0, "final"), tensors(run_dir, 1, "start"), tensors(run_dir, 1, "mask")
    assert all(torch.equal(start_1[n], torch.where(mask_1[n], final_0[n], 0)) for n in mask_1)
    history = [json.loads((run_dir / f"round_{r:02d}" / "metrics.json").read_text())["history"] for r in (0, 1)]
    lr_by_step = [{e["step"]: e["lr"] for e in h} for h in history]
    assert lr_by_step[1] == {step: lr for step, lr in lr_by_step[0].items() if step > 4}, "not the same schedule"
    assert min(lr_by_step[1]) == 5 and lr_by_step[1][10] == pytest.approx(1.2e-3) and lr_by_step[1][20] < 1.3e-4


def test_finetune_trains_at_the_schedules_final_rate(method_run):
    run_dir = method_run("prune.retrain=finetune", "train.epochs=2", "train.lr_schedule=step", "train.milestones=[1ep]")
    history = json.loads((run_dir / "round_01" / "metrics.json").read_text())["history"]
    assert [e["lr"] for e in history] == pytest.approx([1.2e-4] * len(history))
    assert history[0]["step"] == 5, "fine-tuning trains as long as the ticket does"
