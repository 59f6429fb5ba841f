"""Sparse training from the start (lth.dst): the ERK densities, the random initial mask, SET's and RigL's mask
updates and their invariants, and `prune=static|set|rigl` runs end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import FAST, lth_in_process, lth_ok
from safetensors.torch import load_file
from test_train import small_setup

from lth import dst
from lth.config import PruneConfig, TrainConfig
from lth.models import output_layer, prunable_weights
from lth.prune import dense_masks, erk_densities, plan_round
from lth.train import Trainer

DST_FAST = [*FAST, "prune.rounds=0", "prune.update_every=3"]  # 12 steps: updates after steps 3 and 6


def test_erk_follows_rigls_formula_with_the_output_layer_capped_dense_and_the_rest_rescaled():
    # LeNet-300-100 at 20%: ε (n_in + n_out) / (n_in n_out) puts the 100x10 output layer above 1, so it is
    # kept dense and ε recomputed over the other two so that the network keeps 20% of its weights (RigL's
    # sparse_utils.get_sparsities_erdos_renyi, erk_power_scale 1)
    shapes = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
    masks = {name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()}
    densities = erk_densities(masks, 0.2)
    total = sum(math.prod(s) for s in shapes.values())
    epsilon = (0.2 * total - 1000) / sum(sum(shapes[n]) for n in ("fc1", "fc2"))
    assert densities["fc3"] == 1.0
    for name in ("fc1", "fc2"):
        assert densities[name] == pytest.approx(epsilon * sum(shapes[name]) / math.prod(shapes[name]))
    assert sum(densities[n] * math.prod(shapes[n]) for n in shapes) == pytest.approx(0.2 * total)


def _updater(schedule: str, optimizer: str = "adam"):
    """A sparse LeNet trained 6 steps, with the updater of its SET or RigL round."""
    dataset, model = small_setup()
    cfg = PruneConfig(schedule=schedule, rounds=0, target_density=0.2, distribution="erk", update_every=3)
    dense = dense_masks(model)
    groups = plan_round(dense, output_layer(model), cfg, 0)
    masks = dst.initial_masks(dense, groups, torch.Generator().manual_seed(0), None)
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            weight.mul_(masks[name])
    train = TrainConfig(optimizer=optimizer, lr=1e-2, momentum=0.9 if optimizer == "sgd" else 0.0, batch_size=50)
    trainer = Trainer(model, masks, dataset, train, seed=0, round_index=0)
    updater = dst.updater(cfg, masks, seed=0, round_index=0)
    return trainer, updater, groups


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_rigl_update_drops_the_smallest_and_grows_the_largest_dense_gradients_at_zero(optimizer):
    trainer, updater, groups = _updater("rigl", optimizer)
    trainer.run(after_step=lambda t: setattr(t, "end_reason", "test") if t.step == 6 else None)  # 6 of 14 steps
    # what the update after step 6 must find, computed here, before the updater does it
    weights = prunable_weights(trainer.model)
    old = {name: mask.clone() for name, mask in updater.masks.items()}
    x, y = trainer.last_batch()
    loss = torch.nn.functional.cross_entropy(trainer.model(x), y)
    grads = dict(zip(weights, torch.autograd.grad(loss, list(weights.values())), strict=True))
    magnitudes = {name: w.detach().abs().clone() for name, w in weights.items()}
    updater.update(trainer)
    fraction = dst.drop_fraction(updater.cfg, 6, 0.75 * 14)  # updates end at 75% of the round's 14 steps
    assert fraction == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * 6 / 10.5)))
    for name, weight in weights.items():
        new, was = updater.masks[name], old[name]
        dropped, grown = was & ~new, new & ~was
        count = min(int(int(was.sum()) * fraction), was.numel() - int(was.sum()))
        assert int(dropped.sum()) == int(grown.sum()) == count
        assert int(new.sum()) == int(was.sum()) == next(g.kept for g in groups if g.layers == (name,))
        if count:
            # dropped: the smallest magnitudes among the survivors; grown: the largest |gradient| among the missing
            assert magnitudes[name][dropped].max() <= magnitudes[name][was & new].min()
            assert grads[name].abs()[grown].min() >= grads[name].abs()[~was & ~grown].max()
        assert not bool(weight[grown].any()) and not bool(weight[~new].any())
        for moment in trainer.optimizer.state[weight].values():
            if moment.shape == weight.shape:
                assert not bool(moment[grown | ~new].any())
        assert torch.equal(trainer.masks[list(weights).index(name)], new.float())
    assert all(updater.checks.values()) and updater.history[-1]["step"] == 6


def test_set_regrows_at_random_from_a_seed_of_the_step_and_never_a_weight_it_just_dropped():
    first, second = _updater("set")[1], _updater("set")[1]
    for updater in (first, second):
        trainer = _updater("set")[0]
        trainer.run(after_step=lambda t, u=updater: u.update(t) if t.step == 3 else None)  # one update
    assert all(torch.equal(first.masks[n], second.masks[n]) for n in first.masks)  # the same draw
    entry = first.history[0]
    assert entry["dropped"] == entry["grown"] and sum(entry["grown"].values()) > 0
    assert first.checks["updates_dropped_not_regrown"] and 0 < entry["changed_since_start"] < 0.3


def test_a_rigl_run_keeps_its_density_changes_its_mask_and_records_every_update(tmp_path, capsys):
    run_dir = tmp_path / "rigl"
    lth_ok("run", *DST_FAST, "prune=rigl", "prune.target_density=0.2", f"hydra.run.dir={run_dir}", capsys=capsys)
    metrics = json.loads((run_dir / "round_00" / "metrics.json").read_text())
    assert metrics["density"] == pytest.approx(0.2, abs=1e-4) and all(metrics["checks"].values())
    assert [u["step"] for u in metrics["mask_updates"]] == [3, 6]  # every 3 steps until 75% of 12
    mask, start = (load_file(run_dir / "round_00" / f"{f}.safetensors") for f in ("mask", "start"))
    final = load_file(run_dir / "round_00" / "final.safetensors")
    moved = 0
    for name, layer in mask.items():
        began = start[name] != 0  # the survivors start at θ0, never exactly zero
        assert int(layer.sum()) == int(began.sum())
        assert not bool(final[name][~layer].any())
        moved += int((began & ~layer).sum())
    assert moved / sum(int(m.sum()) for m in mask.values()) == pytest.approx(
        metrics["mask_updates"][-1]["changed_since_start"]
    )
    assert moved > 0


def test_static_keeps_its_random_uniform_mask_and_a_dense_round_0_comes_only_if_asked(tmp_path, capsys):
    run_dir = tmp_path / "static"
    args = [*DST_FAST, "prune=static", "prune.distribution=uniform", "prune.target_density=0.3", "prune.rounds=1"]
    lth_ok("run", *args, f"hydra.run.dir={run_dir}", capsys=capsys)
    dense, sparse = (json.loads((run_dir / f"round_0{r}" / "metrics.json").read_text()) for r in (0, 1))
    assert dense["density"] == 1.0 and "mask_updates" not in sparse
    assert all(d == pytest.approx(0.3, abs=1e-3) for d in sparse["layer_density"].values())
    mask, start = (load_file(run_dir / "round_01" / f"{f}.safetensors") for f in ("mask", "start"))
    assert all(torch.equal(mask[n], start[n] != 0) for n in mask)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("prune.target_density=0", "prune.target_density"),
        ("prune.update_every=0", "prune.update_every"),
        ("prune.drop_fraction=1", "prune.drop_fraction"),
        ("prune.update_until=1.2", "prune.update_until"),
        ("prune.early_ticket=true", "prune.early_ticket"),
        ("prune.masks_from=/tmp", "prune.masks_from"),
        ("train.replicates=2", "train.replicates"),
        ("train.patience=3 dataset.val_size=0", "train.patience"),
    ],
)
def test_bad_sparse_training_input_is_refused_in_one_line_naming_the_key(tmp_path, capsys, override, key):
    run_dir = f"hydra.run.dir={tmp_path / 'r'}"
    code, out, err = lth_in_process("run", *DST_FAST, "prune=rigl", *override.split(), run_dir, capsys=capsys)
    assert code == 2, out + err
    assert err.startswith(f"lth: error: {key}=") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_a_sparse_arm_is_one_table_column_across_its_densities(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    lth_ok("run", "-m", *DST_FAST, "prune=static", "prune.target_density=0.5,0.2", f"hydra.sweep.dir={sweep}",
           capsys=capsys)  # fmt: skip
    header, _, *rows = lth_ok("report", str(sweep), "--table", "markdown", capsys=capsys).strip().splitlines()
    assert header.startswith("| density | static ERK (n = 1) |") and header.count("|") == 3
    assert [row.split("|")[1].strip() for row in rows] == ["50.00%", "20.00%"]
