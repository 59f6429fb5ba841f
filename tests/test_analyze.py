"""`lth analyze`: mask overlaps against hand-computed Jaccard indices, survivors per layer, linear mode connectivity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import lth_in_process, lth_ok
from safetensors.torch import load_file

from lth import analyze
from lth.report import load_runs

pytestmark = pytest.mark.usefixtures("wide_console")


def _masks(run_dir, round_index):
    return load_file(run_dir / f"round_{round_index:02d}" / "mask.safetensors")


def test_overlap_of_consecutive_rounds_is_the_jaccard_index(sweep_template, capsys):
    run_dir = sweep_template / "0"
    rows = json.loads(lth_ok("analyze", "overlap", str(run_dir), "--json", capsys=capsys))
    assert [r["round"] for r in rows] == [1, 2] and {r["comparison"] for r in rows} == {"rounds"}
    for row in rows:
        now, before = _masks(run_dir, row["round"]), _masks(run_dir, row["round"] - 1)
        for name, value in row["layers"].items():
            expected = (now[name] & before[name]).sum().item() / (now[name] | before[name]).sum().item()
            assert value == pytest.approx(expected, abs=1e-15)
    assert "Jaccard overlap" in lth_ok("analyze", "overlap", str(run_dir), capsys=capsys)


def test_overlap_of_a_run_with_itself_is_1_and_seeds_are_compared(sweep_template, tmp_path, capsys):
    # the same run twice, labelled with another seed: every mask of every round overlaps its twin completely
    twin = tmp_path / "twin"
    for name, seed in (("a", 0), ("b", 1)):
        shutil.copytree(sweep_template / "0", twin / name)
        record = json.loads((twin / name / "run.json").read_text())
        record["config"]["seed"] = seed
        (twin / name / "run.json").write_text(json.dumps(record))
    seeds = [r for r in analyze.overlap(load_runs([twin])) if r["comparison"] == "seeds"]
    assert [r["round"] for r in seeds] == [0, 1, 2]
    assert all(v == 1.0 for r in seeds for v in [*r["layers"].values(), r["all"]])
    assert analyze.jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    # the real sweep: seeds 0 and 1 of each rate, round by round, with chance beside them
    real = [r for r in analyze.overlap(load_runs([sweep_template])) if r["comparison"] == "seeds"]
    assert len(real) == 2 * 3 and all(r["seeds"] == [0, 1] for r in real)
    assert all(0 < r["chance"]["fc1.weight"] <= 1 for r in real)
    table = lth_ok("analyze", "overlap", str(sweep_template), capsys=capsys)
    assert "seeds 0, 1" in table and "rate 0.2 vs rate 0.5, seed 0" in table
    # two arms at one seed: rate 0.5 keeps the top half of the same trained round 0 that rate 0.2 keeps the top
    # 80% of, so in round 1 its mask lies inside the other's and the overlap is the ratio of their sizes
    arms = [r for r in analyze.overlap(load_runs([sweep_template])) if r["comparison"] == "arms"]
    assert {(r["round"], r["seeds"][0]) for r in arms} == {(1, 0), (2, 0), (1, 1), (2, 1)}
    first = next(r for r in arms if r["round"] == 1)
    small, large = (_masks(Path(first[key]), 1)["fc1.weight"] for key in ("against", "run"))
    assert first["layers"]["fc1.weight"] == pytest.approx(small.sum().item() / large.sum().item())


def test_layers_reports_survivors_and_their_magnitudes(sweep_template, capsys):
    run_dir = sweep_template / "0"
    rows = json.loads(lth_ok("analyze", "layers", str(run_dir), "--json", capsys=capsys))
    init = load_file(run_dir / "init.safetensors")
    row = next(r for r in rows if r["round"] == 2 and r["layer"] == "fc2.weight")
    mask = _masks(run_dir, 2)["fc2.weight"]
    final = load_file(run_dir / "round_02" / "final.safetensors")["fc2.weight"]
    assert row["remaining"] == mask.sum().item() and row["total"] == mask.numel()
    assert row["init_mean_abs"] == pytest.approx(init["fc2.weight"][mask].abs().mean().item())
    assert row["final_mean_abs"] == pytest.approx(final[mask].abs().mean().item())
    assert row["start_mean_abs"] == pytest.approx(row["init_mean_abs"])  # rewound to θ0
    assert row["init_layer_mean_abs"] == pytest.approx(init["fc2.weight"].abs().mean().item())
    assert len(rows) == 3 * 3 and "mean |w| final" in lth_ok("analyze", "layers", str(run_dir), capsys=capsys)


def test_the_layers_figure_draws_each_layers_survivors_at_init_against_its_density(sweep_template, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lth.report import group_runs
    from lth.ticket_plots import survivors_at_init

    groups = group_runs(load_runs([sweep_template]))  # prune.rate 0.2 and 0.5, two seeds each
    fig, ax = plt.subplots()
    survivors_at_init(ax, [(group, group.name()) for group in groups])
    fig.savefig(tmp_path / "layers.png")
    assert (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_xlabel() == "weights remaining in the layer (density, log scale)"
    assert ax.get_ylabel() == "mean |w| at θ0: survivors / whole layer"
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert sorted(lines) == sorted(f"{layer} ({group.name()})" for group in groups for layer in ("fc1", "fc2", "fc3"))
    rows = analyze.layers(groups[0].runs)
    fc1 = lines[f"fc1 ({groups[0].name()})"]
    for round_index, (density, ratio) in enumerate(zip(fc1.get_xdata(), fc1.get_ydata(), strict=True)):
        mine = [row for row in rows if row["layer"] == "fc1.weight" and row["round"] == round_index]
        assert density == pytest.approx(sum(row["density"] for row in mine) / len(mine))
        assert ratio == pytest.approx(sum(row["init_mean_abs"] / row["init_layer_mean_abs"] for row in mine) / 2)
    assert fc1.get_ydata()[0] == pytest.approx(1.0) and fc1.get_ydata()[-1] > 1  # magnitude pruning kept large θ0
    plt.close(fig)


def test_lmc_of_two_identical_trainings_has_no_barrier(sweep_template, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(sweep_template / "0", run_dir)
    # the second copy trained with the run's own seed is the round's training again: the same weights
    same = analyze.lmc(run_dir, 1, points=5, seed=0)
    assert same["barrier"] == 0 and len(same["points"]) == 5
    assert {p["test_error"] for p in same["points"]} == {same["points"][0]["test_error"]}
    metrics = json.loads((run_dir / "round_01" / "metrics.json").read_text())
    assert same["points"][0]["test_error"] == pytest.approx(1 - metrics["test_accuracy"])
    # the command: another data order, the result saved in analysis/ and drawn as a table
    table = lth_ok("analyze", "lmc", str(run_dir), "--round", "1,2", "--points", "4", capsys=capsys)
    saved = json.loads((run_dir / "analysis" / "lmc_round_02.json").read_text())
    assert "rounds 1, 2" in table and f"{saved['barrier']:.2%}" in table
    assert (run_dir / "analysis" / "lmc_round_01.json").is_file()
    # both rounds' barriers against density: the instability figure of lth report --plot-dir
    written = lth_ok("report", str(run_dir), "--plot-dir", str(tmp_path / "figures"), capsys=capsys)
    assert str(tmp_path / "figures" / "instability_vs_density.png") in written
    assert [p["alpha"] for p in saved["points"]] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert saved["seeds"]["first"] == 0 and saved["seeds"]["second"] != 0
    errors = [p["test_error"] for p in saved["points"]]
    assert saved["barrier"] == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2)


def test_bad_analyze_input_is_one_line_exit_2(sweep_template, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["analyze", "lmc", str(sweep_template / "0"), "--round", "9"], "round 9 does not exist; rounds 0..2"),
        (["analyze", "lmc", str(sweep_template / "0"), "--round", "1", "--points", "1"], "--points 1"),
        (["analyze", "lmc", str(sweep_template / "0")], "required: --round"),
        (["analyze", "frobnicate", str(sweep_template)], "invalid choice: 'frobnicate'"),
        (["analyze", "overlap", str(tmp_path / "empty")], "is not an lth run directory"),
    ]
    for args, message in cases:
        code, out, err = lth_in_process(*args, capsys=capsys)
        assert code == 2 and not out and err.startswith("lth: error: ") and message in err and err.count("\n") == 1, err
    assert not (sweep_template / "0" / "analysis").exists()
