"""`lth report` over several runs: seed aggregation, JSON/CSV rows, unfinished runs, figures, bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics

import pytest
from helpers import lth_in_process, lth_ok

from lth.report import AGGREGATED, group_runs, load_runs

pytestmark = pytest.mark.usefixtures("wide_console")


def _edit_record(run_dir, **changes):
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = record
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(json.dumps(record))


def test_aggregation_is_the_mean_and_sample_std_of_the_per_run_rows(sweep_template, capsys):
    rows = json.loads(lth_ok("report", str(sweep_template), "--json", capsys=capsys))
    assert len(rows) == 4 * 3 and {r["config"]["prune.rate"] for r in rows} == {0.2, 0.5}
    groups = {g.label["prune.rate"]: g for g in group_runs(load_runs([sweep_template]))}
    assert set(groups) == {0.2, 0.5}
    for rate, group in groups.items():
        for aggregated in group.rounds():
            mine = [r for r in rows if r["config"]["prune.rate"] == rate and r["round"] == aggregated["round"]]
            assert aggregated["n"] == 2 and sorted(r["seed"] for r in mine) == [0, 1]
            for metric in AGGREGATED:
                values = [r[metric] for r in mine]
                assert aggregated[metric]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
                assert aggregated[metric]["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)

    table = lth_ok("report", str(sweep_template), capsys=capsys)
    for header in ("prune.rate", "round", "n", "density", "acc (early stop)", "final acc", "early-stop step"):
        assert header in table
    assert "seeds 0, 1: 4 runs, 2 configuration(s)" in table
    sparsest = groups[0.5].rounds()[2]["test_accuracy"]
    expected = f"{sparsest['mean']:.2%}" + (f" ± {sparsest['std']:.2%}" if sparsest["std"] else "")
    assert expected in table


def test_csv_and_group_by(sweep_template, capsys):
    parsed = list(csv.DictReader(io.StringIO(lth_ok("report", str(sweep_template), "--csv", capsys=capsys))))
    assert len(parsed) == 12 and {"run", "round", "seed", "density", "config.prune.rate"} <= set(parsed[0])
    assert "layer_density.fc1.weight" in parsed[0]
    # grouping by the seed instead: two groups of two runs (the two rates), keyed by seed
    table = lth_ok("report", str(sweep_template), "--group-by", "seed", capsys=capsys)
    assert "seed" in table and "prune.rate" not in table


def test_a_single_run_keeps_the_per_round_table(sweep_template, capsys):
    table = lth_ok("report", str(sweep_template / "0"), capsys=capsys)
    for header in ("round", "density", "params", "acc (early stop)", "final acc", "early-stop step", "time"):
        assert header in table
    assert " n " not in table and "±" not in table


def test_failed_and_empty_runs_are_marked_not_fatal(sweep_template, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_template, sweep)
    _edit_record(sweep / "0", status="failed")
    shutil.copytree(sweep / "2", sweep / "empty")
    for folder in (sweep / "empty").glob("round_*"):
        shutil.rmtree(folder)
    _edit_record(sweep / "empty", status="interrupted")
    table = lth_ok("report", str(sweep), capsys=capsys)
    assert "1 failed" in table and "no finished rounds (interrupted)" in table
    rows = json.loads(lth_ok("report", str(sweep), "--json", capsys=capsys))
    assert len(rows) == 12 and {r["status"] for r in rows if r["run"] == str(sweep / "0")} == {"failed"}
    # a single failed run: its table, marked
    assert "(failed)" in lth_ok("report", str(sweep / "0"), capsys=capsys)
    # nothing finished at all: one line, exit 2
    code, _, err = lth_in_process("report", str(sweep / "empty"), capsys=capsys)
    assert code == 2 and err.startswith("lth: error: ") and "no finished rounds" in err and err.count("\n") == 1


@pytest.mark.slow  # renders and reads back every figure: about 8 s
def test_every_figure_is_a_readable_non_blank_png(sweep_template, tmp_path, capsys):
    import matplotlib.image as mpimg

    sweep = tmp_path / "sweep"
    shutil.copytree(sweep_template, sweep)
    # an `lth analyze lmc` result (the real one is tested in test_analyze.py): its curve becomes a figure
    (sweep / "0" / "analysis").mkdir()
    points = [{"alpha": a / 4, "test_error": 0.5 + 0.1 * (a in (1, 2, 3)), "test_loss": 1.0} for a in range(5)]
    lmc = {"round": 1, "density": 0.8, "barrier": 0.1, "loss_barrier": 0.0, "points": points}
    (sweep / "0" / "analysis" / "lmc_round_01.json").write_text(json.dumps(lmc))
    one, folder = tmp_path / "all.png", tmp_path / "figures"
    printed = lth_ok(
        "report", str(sweep), "--plot", str(one), "--plot-dir", str(folder), "--rounds", "0,2", capsys=capsys
    )
    names = ["accuracy_vs_density", "early_stop_vs_density", "layer_density", "training_curves", "lmc"]
    names.append("instability_vs_density")  # the lmc result's barrier against its density
    names += ["first_layer_connectivity", "mask_overlap_rounds", "mask_overlap_seeds", "dead_units_vs_density"]
    names += ["generalisation_gap_vs_density", "layer_survivors_at_init"]  # a ticket's structure (lth.ticket_plots)
    assert sorted(p.stem for p in folder.iterdir()) == sorted(names)
    assert f"wrote {one}" in printed
    for path in [one, *(folder / f"{name}.png" for name in names)]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = mpimg.imread(path)
        height, width = image.shape[:2]
        assert 400 <= height <= 3000 and 600 <= width <= 3000, (path, image.shape)
        assert image[..., :3].std() > 0.02, f"{path} looks blank"
    assert mpimg.imread(one).shape[0] > mpimg.imread(folder / "lmc.png").shape[0]  # the subplots grid


def test_bad_report_input_is_one_line_exit_2(sweep_template, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(sweep_template / "0", other / "0")
    shutil.copytree(sweep_template / "1", other / "1")
    _edit_record(other / "1", **{"config.model.name": "lenet5"})
    cases = [
        (["report", str(sweep_template), "--group-by", "prune.rat"], "--group-by prune.rat: no run"),
        (["report", str(sweep_template), "--plot-dir", str(tmp_path / "p"), "--rounds", "7"], "--rounds 7: no such"),
        (["report", str(other), "--plot", str(tmp_path / "x.png")], "different models (lenet5, lenet_300_100)"),
        (["report", str(sweep_template), "--json", "--csv"], "not allowed with argument"),
    ]
    for args, message in cases:
        code, out, err = lth_in_process(*args, capsys=capsys)
        assert code == 2 and not out and err.startswith("lth: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "p").exists()
