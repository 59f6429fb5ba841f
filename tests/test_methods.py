"""The lottery-ticket controls and variants: pruning criteria and what survivors are reset to."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from helpers import FAST, lth_ok
from safetensors.torch import load_file
from torch import nn

from lth.config import PruneConfig
from lth.criteria import Scoring, shuffle_within_layers, signed_constant
from lth.data import Dataset, Split
from lth.prune import PruneGroup


def scoring(criterion: str, masks, **given) -> Scoring:
    """A Scoring with only what the criterion under test reads."""
    fields = {"model": None, "final": {}, "init": {}, "start": {}, "data": None, "generator": torch.Generator()}
    return Scoring(cfg=PruneConfig(criterion=criterion), masks=masks, **{**fields, **given})


def test_magnitude_increase_keeps_the_weights_that_grew_most():
    init = {"w": torch.tensor([1.0, -1.0, 0.1, 2.0])}
    final = {"w": torch.tensor([1.5, -0.5, -0.9, 2.1])}  # growth of |w|: 0.5, -0.5, 0.8, 0.1
    masks = {"w": torch.ones(4, dtype=torch.bool)}
    kept = scoring("magnitude_increase", masks, final=final, init=init).prune([PruneGroup(("w",), 2)])["w"]
    assert kept.tolist() == [True, False, True, False]
    inverted = scoring("magnitude_increase", masks, final=final, init=init).prune([PruneGroup(("w",), 2)], invert=True)
    assert inverted["w"].tolist() == [False, True, False, True]


def test_random_scores_are_seeded_and_keep_the_planned_counts():
    masks = {"a": torch.ones(100, dtype=torch.bool), "b": torch.ones(40, dtype=torch.bool)}
    groups = [PruneGroup(("a",), 64), PruneGroup(("b",), 10)]

    def random_masks(seed: int) -> dict[str, torch.Tensor]:
        return scoring("random", masks, generator=torch.Generator().manual_seed(seed)).prune(groups)

    first, again, other = random_masks(0), random_masks(0), random_masks(1)
    assert int(first["a"].sum()) == 64 and int(first["b"].sum()) == 10
    assert all(torch.equal(first[n], again[n]) for n in masks)
    assert not torch.equal(first["a"], other["a"])


class TwoLayers(nn.Module):
    """x -> W2 relu(W1 x): small enough to score by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2, bias=False)
        self.fc2 = nn.Linear(2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x).relu())


W1 = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
W2 = torch.tensor([[2.0, -1.0], [-0.5, 0.25]])


def hand_example(criterion: str) -> Scoring:
    model = TwoLayers()
    start = {"fc1.weight": W1, "fc2.weight": W2}
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    split = Split(x, torch.tensor([0, 1]))
    masks = {name: torch.ones(2, 2, dtype=torch.bool) for name in start}
    data = Dataset(train=split, val=None, test=split, num_classes=2)
    return scoring(criterion, masks, model=model, start=start, data=data)


def test_synflow_scores_match_the_path_products_by_hand():
    """R = 1^T |W2| |W1| 1 (no ReLU effect: all positive), so dR/dW1[i,j] = sum_k |W2[k,i]| and
    dR/dW2[k,i] = sum_j |W1[i,j]|; the score is |w| times that."""
    scores = hand_example("synflow")._scores("synflow")
    column_sums = W2.abs().sum(0)  # [2.5, 1.25]
    row_sums = W1.abs().sum(1)  # [3.0, 3.5]
    assert torch.allclose(scores["fc1.weight"], W1.abs() * column_sums[:, None])
    assert torch.allclose(scores["fc2.weight"], W2.abs() * row_sums[None, :])


def test_snip_scores_match_the_gradient_by_hand():
    example = hand_example("snip")
    example.cfg.score_examples_per_class = 1
    x, y = example.data.train.x, example.data.train.y
    hidden = x @ W1.T
    active = (hidden > 0).float()
    probabilities = torch.softmax(hidden.relu() @ W2.T, 1)
    delta = (probabilities - torch.nn.functional.one_hot(y, 2)) / len(y)  # dL/dlogits of the mean loss
    grad_w2 = delta.T @ hidden.relu()
    grad_w1 = ((delta @ W2) * active).T @ x
    scores = example._scores("snip")
    assert torch.allclose(scores["fc2.weight"], (grad_w2 * W2).abs(), atol=1e-6)
    assert torch.allclose(scores["fc1.weight"], (grad_w1 * W1).abs(), atol=1e-6)


def test_grasp_scores_are_the_weights_times_the_hessian_gradient_product():
    example = hand_example("grasp")
    example.cfg.score_examples_per_class = 1
    x, y = example.data.train.x, example.data.train.y

    def loss(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy((x @ w1.T).relu() @ w2.T / 200, y)

    gradient = torch.autograd.grad(loss(W1.requires_grad_(), W2.requires_grad_()), (W1, W2))
    _, hessian_gradient = torch.autograd.functional.hvp(loss, (W1.detach(), W2.detach()), gradient)
    scores = example._scores("grasp")
    assert torch.allclose(scores["fc1.weight"], W1.detach() * hessian_gradient[0], atol=1e-9)
    assert torch.allclose(scores["fc2.weight"], W2.detach() * hessian_gradient[1], atol=1e-9)


def test_synflow_prunes_iteratively_to_exactly_the_planned_count():
    example = hand_example("synflow")
    example.cfg.synflow_iterations, example.cfg.min_layer_density = 4, 0.0
    masks = example.prune([PruneGroup(("fc1.weight", "fc2.weight"), 3)])
    assert sum(int(m.sum()) for m in masks.values()) == 3


def test_shuffle_and_signed_constant_controls():
    mask = torch.zeros(50, 4, dtype=torch.bool)
    mask[:10] = True
    shuffled = shuffle_within_layers({"w": mask}, torch.Generator().manual_seed(0))["w"]
    assert int(shuffled.sum()) == 40 and not torch.equal(shuffled, mask)
    start = {"w": torch.tensor([0.3, -0.1, 0.0]), "b": torch.tensor([0.7])}
    init = {"w": torch.tensor([1.0, -1.0, 1.0, -1.0]), "b": torch.tensor([5.0])}
    constant = signed_constant(start, init, ["w"])
    sigma = init["w"].std()
    assert torch.equal(constant["w"], torch.stack([sigma, -sigma, torch.tensor(0.0)]))
    assert torch.equal(constant["b"], start["b"]), "biases are not prunable weights and keep their values"


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


@pytest.mark.parametrize("criterion", ["snip", "grasp", "synflow"])
def test_pruning_at_initialisation_criteria_keep_the_tickets_layer_counts(method_run, finished_template, criterion):
    run_dir = method_run(f"prune.criterion={criterion}", "prune.synflow_iterations=5")
    ticket_mask, mask = tensors(finished_template, 1, "mask"), tensors(run_dir, 1, "mask")
    assert {n: int(m.sum()) for n, m in mask.items()} == {n: int(m.sum()) for n, m in ticket_mask.items()}
    assert any(not torch.equal(mask[n], ticket_mask[n]) for n in mask)
    assert all(json.loads((run_dir / "round_01" / "metrics.json").read_text())["checks"].values())


def test_controls_train_the_tickets_own_masks(method_run, finished_template):
    """masks_from: the reinit control trains the ticket's masks; shuffle_layer permutes them within layers."""
    reinit = method_run("prune.retrain=reinit", f"prune.masks_from={finished_template}")
    shuffled = method_run("prune.control=shuffle_layer", f"prune.masks_from={finished_template}")
    ticket = tensors(finished_template, 1, "mask")
    assert all(torch.equal(tensors(reinit, 1, "mask")[n], m) for n, m in ticket.items())
    for name, keep in ticket.items():
        assert int(tensors(shuffled, 1, "mask")[name].sum()) == int(keep.sum())
        assert not torch.equal(tensors(shuffled, 1, "mask")[name], keep)


def test_masks_round_trains_one_borrowed_mask_in_every_round(method_run, finished_template):
    run_dir = method_run("prune.rounds=2", f"prune.masks_from={finished_template}", "prune.masks_round=2")
    late = tensors(finished_template, 2, "mask")
    for round_index in (1, 2):
        assert all(torch.equal(tensors(run_dir, round_index, "mask")[n], m) for n, m in late.items())


def test_invert_keeps_the_smallest_survivors(method_run, finished_template):
    run_dir = method_run("prune.control=invert")
    final_0, mask = tensors(run_dir, 0, "final"), tensors(run_dir, 1, "mask")
    for name, keep in mask.items():
        assert final_0[name].abs()[keep].max() <= final_0[name].abs()[~keep].min()


def test_signed_constant_starts_survivors_at_plus_or_minus_the_init_std(method_run):
    run_dir = method_run("prune.control=signed_constant")
    init, start, mask = (
        load_file(run_dir / "init.safetensors"),
        tensors(run_dir, 1, "start"),
        tensors(run_dir, 1, "mask"),
    )
    for name, keep in mask.items():
        assert torch.allclose(start[name][keep].abs(), init[name].std().expand(int(keep.sum())))


def test_oneshot_prunes_the_dense_network_to_the_target(method_run):
    run_dir = method_run("prune.schedule=oneshot", "prune.target_density=0.1", "prune.distribution=global")
    metrics = json.loads((run_dir / "round_01" / "metrics.json").read_text())
    assert metrics["density"] == pytest.approx(0.1, abs=1e-5)
    assert metrics["remaining_weights"] == round(0.1 * (784 * 300 + 300 * 100 + 1000))
    assert metrics["collapsed_layers"] == [] and all(metrics["checks"].values())


def test_masks_from_a_sweep_folder_takes_the_run_with_the_same_seed(method_run, finished_template, tmp_path):
    sweep = tmp_path / "tickets"
    for seed in (0, 1):
        shutil.copytree(finished_template, sweep / str(seed))
        record = json.loads((sweep / str(seed) / "run.json").read_text())
        record["config"]["seed"] = seed
        (sweep / str(seed) / "run.json").write_text(json.dumps(record))
    control = method_run("+controls=reinit", f"prune.masks_from={sweep}")
    ticket = tensors(sweep / "0", 1, "mask")
    assert all(torch.equal(tensors(control, 1, "mask")[n], m) for n, m in ticket.items())
    assert json.loads((control / "run.json").read_text())["config"]["prune"]["retrain"] == "reinit"
    shutil.copytree(sweep / "0", sweep / "again")
    from lth import config, preflight

    with pytest.raises(config.ConfigError, match=r"holds 2 runs .* with seed=0; name one run directory"):
        preflight.environment(
            config.compose(["+controls=random_pruning", f"prune.masks_from={sweep}", "prune.rounds=1"])
        )
