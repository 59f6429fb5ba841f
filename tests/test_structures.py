"""Structured and N:M pruning (`prune.structure`): what a round removes, the counts it keeps, the proofs it records
and what it refuses."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FAST, lth_in_process, lth_ok
from torch import nn

from lth import structures
from lth.checks import check_end
from lth.config import PruneConfig
from lth.criteria import Scoring
from lth.errors import ConfigError
from lth.models.transformer import SelfAttention
from lth.prune import dense_masks


class Net(nn.Module):
    """conv (4 filters) -> linear (6 units) -> linear (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.hidden = nn.Linear(16, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(self.conv(x).flatten(1)).relu())


def pruned(model: nn.Module, cfg: PruneConfig, weights: dict[str, torch.Tensor], round_index: int = 1):
    masks = dense_masks(model)
    fields = {"init": {}, "start": {}, "data": None, "generator": torch.Generator()}
    scoring = Scoring(cfg=cfg, model=model, masks=masks, final=weights, **fields)
    return structures.prune(scoring, round_index, invert=False)


def test_neuron_pruning_removes_the_rows_of_smallest_mean_magnitude_and_prunes_the_output_layer_by_weight():
    model = Net()
    weights = {name: torch.rand_like(p) for name, p in model.named_parameters() if name.endswith("weight")}
    weights["hidden.weight"][[1, 4]] *= 0.01  # the two weakest units (of 6, at rate 0.25 two go: round(6 * 0.75))
    cfg = PruneConfig(structure="neuron", rate=0.25, output_rate=0.5)
    masks, groups = pruned(model, cfg, weights)
    rows = masks["hidden.weight"].all(1)
    assert rows.tolist() == [True, False, True, True, False, True]
    assert not masks["hidden.weight"][~rows].any()  # a pruned unit has no surviving weight
    assert int(masks["out.weight"].sum()) == round(18 * 0.5)  # the classes stay: by weight at output_rate
    assert int(masks["conv.weight"].sum()) == round(36 * 0.75)  # conv layers by weight, at the rate
    proofs = check_end(model, masks, groups, cfg, 1)
    assert proofs["end_density_as_planned"] and proofs["structure_units_whole"]
    broken = dict(masks, **{"hidden.weight": masks["hidden.weight"].clone()})
    broken["hidden.weight"][0, 3] = False  # a unit that lost one weight is no longer whole
    assert check_end(model, broken, groups, cfg, 1)["structure_units_whole"] is False


def test_channel_pruning_removes_whole_filters_at_the_conv_rate():
    model = Net()
    weights = {name: torch.rand_like(p) + 1 for name, p in model.named_parameters() if name.endswith("weight")}
    weights["conv.weight"][2] *= 0.01
    masks, _ = pruned(model, PruneConfig(structure="channel", rate=0.2, conv_rate=0.25), weights)
    assert masks["conv.weight"].flatten(1).all(1).tolist() == [True, True, False, True]
    assert int(masks["hidden.weight"].sum()) == round(96 * 0.8)  # linear layers by weight


def test_head_pruning_removes_q_k_v_rows_and_out_columns_of_a_head_together():
    attention = SelfAttention(width=8, heads=4)  # heads of 2 dimensions
    model = nn.Sequential(attention, nn.Linear(8, 3))
    weights = {name: torch.rand_like(p) + 1 for name, p in model.named_parameters() if name.endswith("weight")}
    weights["0.v.weight"][4:6] *= 0.01  # head 2's values
    masks, _ = pruned(model, PruneConfig(structure="head", rate=0.25), weights)
    for name in ("0.q.weight", "0.k.weight", "0.v.weight"):
        assert masks[name].all(1).tolist() == [True] * 4 + [False] * 2 + [True] * 2
    assert masks["0.out.weight"].all(0).tolist() == [True] * 4 + [False] * 2 + [True] * 2


def test_nm_keeps_at_most_n_of_every_m_and_stays_at_n_over_m_until_the_schedule_goes_below():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    weights = {name: torch.randn_like(p) for name, p in model.named_parameters() if name.endswith("weight")}
    cfg = PruneConfig(structure="nm", nm=[1, 4], rate=0.2)
    masks, groups = pruned(model, cfg, weights)
    first = masks["0.weight"].reshape(4, 2, 4)
    assert first.sum(2).eq(1).all()  # 0.8 planned, 1:4 allows 0.25: every group keeps its best one
    best = weights["0.weight"].abs().reshape(4, 2, 4).argmax(2)
    assert torch.equal(first.float().argmax(2), best)
    proofs = check_end(model, masks, groups, cfg, 1)
    assert proofs["structure_pattern_held"] and proofs["end_density_as_planned"]
    assert check_end(model, dense_masks(model), groups, cfg, 1)["structure_pattern_held"] is False


@pytest.mark.slow
def test_a_structured_run_records_its_proofs(tmp_path, capsys):
    run = tmp_path / "neuron"
    lth_ok("run", *FAST, "prune.rounds=1", "prune.structure=neuron", f"hydra.run.dir={run}", capsys=capsys)
    metrics = json.loads((run / "round_01" / "metrics.json").read_text())
    assert metrics["checks"]["structure_units_whole"] is True
    assert metrics["layer_density"]["fc1.weight"] == 240 / 300  # 80% of the 300 units, whole rows
    assert metrics["dead_units"]["fc1.weight"]["no_incoming"] == 60  # the pruned units, free to compact


def test_the_schema_refuses_an_nm_pattern_that_prunes_nothing_and_a_shuffle_that_breaks_units():
    with pytest.raises(
        ConfigError, match=r"prune.nm=\[4, 4\] is not allowed; prune.nm must be \[N, M\] with 1 <= N < M"
    ):
        PruneConfig(structure="nm", nm=[4, 4])
    with pytest.raises(ConfigError, match=r"prune\.control=shuffle_layer is not allowed"):
        PruneConfig(structure="neuron", control="shuffle_layer")
    with pytest.raises(ConfigError, match="no attention layers"):
        structures.check_model(Net(), PruneConfig(structure="head"))
    with pytest.raises(ConfigError, match=r"prune\.scope=global is not allowed with prune\.structure=neuron"):
        structures.check_model(Net(), PruneConfig(structure="neuron", scope="global"))  # units of unequal sizes


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["prune.structure=channel"], "prune.structure=channel is not allowed for model LeNet300100: it has no conv"),
        (["prune.structure=nm", "prune.nm=[2,3]"], "fc1.weight: its 784 inputs per unit are not a multiple of M=3"),
    ],
)
def test_a_structure_that_does_not_fit_the_model_is_refused_in_one_line_before_anything_is_written(
    tmp_path, capsys, overrides, says
):
    code, _, err = lth_in_process("run", *FAST, *overrides, f"hydra.run.dir={tmp_path / 'run'}", capsys=capsys)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_neuron_pruned_lenet_compacts_to_its_surviving_units_with_the_same_outputs():
    from lth import compact, models
    from lth.config import ModelConfig
    from lth.prune import apply_masks

    torch.manual_seed(0)
    model = models.build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-0.5, 0.5)  # pruned units keep their bias: constants the compaction must fold
    weights = {name: w.detach() for name, w in model.named_parameters() if name.endswith("weight")}
    masks, _ = pruned(model, PruneConfig(structure="neuron", rate=0.5), weights)
    apply_masks(model, masks)
    small = compact.compact(model, masks)
    assert small.units == {"fc1": [300, 150], "fc2": [100, 50]}
    x = torch.randn(16, 1, 28, 28)
    torch.testing.assert_close(small.model(x), model(x), atol=1e-5, rtol=0)


def test_borrowed_masks_without_the_structure_are_refused_before_anything_is_written(fast_run, tmp_path, capsys):
    args = ["run", *FAST, f"prune.masks_from={fast_run}", "prune.structure=neuron", f"hydra.run.dir={tmp_path / 'c'}"]
    code, _, err = lth_in_process(*args, capsys=capsys)
    assert code == 2 and "masks do not have prune.structure=neuron (structure_units_whole fails)" in err
    assert not (tmp_path / "c").exists()
