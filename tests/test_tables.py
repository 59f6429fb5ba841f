"""Arms named in researcher words, and the paper-style density × arm table of `lth report --table`."""

from __future__ import annotations

import statistics

import pytest
from helpers import lth_in_process, lth_ok

from lth.arms import arm_name
from lth.report import configuration, group_runs, load_runs


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ({}, "ticket"),
        ({"prune.retrain": "rewind", "prune.masks_from": None}, "ticket"),
        ({"prune.retrain": "reinit", "prune.masks_from": "/runs/tickets"}, "reinit"),
        ({"prune.control": "shuffle_layer", "prune.masks_from": "/runs/tickets"}, "random pruning"),
        ({"prune.criterion": "snip", "prune.schedule": "oneshot"}, "SNIP, one-shot"),
        (  # a one-shot arm is one name across its target densities: one column, one line
            {"prune.schedule": "oneshot", "prune.rounds": 1, "prune.target_density": 0.05, "prune.distribution": "global"},  # noqa: E501
            "one-shot",
        ),
        ({"prune.rate": 0.3}, "rate 0.3"),
        ({"prune.rewind_to": "0"}, "rewind to θ0"),
        ({"prune.rewind_to": "500it"}, "rewind to 500it"),
        ({"prune.retrain": "lr_rewind"}, "LR rewinding"),
        ({"prune.schedule": "rigl", "prune.distribution": "erk", "prune.rounds": 0}, "RigL"),
        ({"prune.schedule": "set", "prune.distribution": "uniform"}, "SET uniform"),
        ({"prune.schedule": "static", "prune.distribution": "erk", "prune.rounds": 0}, "static ERK"),
        ({"prune.schedule": "static", "prune.distribution": "uniform"}, "static uniform"),
        ({"prune.schedule": "iterative", "prune.early_ticket": True}, "early-bird ticket"),
        ({"prune.early_ticket": False, "prune.criterion": "magnitude"}, "ticket"),  # a default adds no words
        ({"prune.early_ticket": None}, "ticket"),  # absent from a record made before the key existed
        ({"prune.schedule": "iterative", "prune.target_density": None, "prune.distribution": None}, "ticket"),
    ],
)
def test_arm_names(label, name):
    assert arm_name(label) == name


def test_the_table_is_density_rows_by_arm_columns(sweep_template, capsys):
    groups = {g.label["prune.rate"]: g for g in group_runs(load_runs([sweep_template]))}
    markdown = lth_ok("report", str(sweep_template), "--table", "markdown", capsys=capsys)
    lines = markdown.strip().splitlines()
    assert lines[0] == "| density | rate 0.2 (n = 2) | rate 0.5 (n = 2) |"
    # 3 rounds of each rate at distinct densities, except the dense round both share: 5 rows
    assert len(lines) == 2 + 5 and lines[2].startswith("| 100.00% |")
    last = groups[0.5].rounds()[2]
    values = [r["early_stop_test_accuracy"] for run in groups[0.5].runs for r in run.rows[2:3]]
    assert last["early_stop_test_accuracy"]["mean"] == pytest.approx(statistics.fmean(values))
    cell = f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"
    assert lines[-1].startswith(f"| {last['density']['mean']:.2%} |") and lines[-1].endswith(f"| {cell} |")
    latex = lth_ok("report", str(sweep_template), "--table", "latex", "--metric", "early_stop_step", capsys=capsys)
    assert latex.startswith("\\begin{tabular}{rrr}") and "100.00\\%" in latex and "$\\pm$" in latex
    csv_text = lth_ok("report", str(sweep_template), "--table", "csv", capsys=capsys)
    assert csv_text.splitlines()[0] == "density,rate 0.2 (n = 2),rate 0.5 (n = 2)"


def test_group_by_says_which_experiments_it_merged(sweep_template, capsys):
    code, _, err = lth_in_process("report", str(sweep_template), "--group-by", "seed", capsys=capsys)
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == 2 and all("merges runs that differ in prune.rate (0.2, 0.5)" in w for w in warnings)
    code, _, err = lth_in_process("report", str(sweep_template), "--group-by", "prune.rate", capsys=capsys)
    assert code == 0 and err == ""


def test_null_output_rate_is_the_rate_it_stands_for(sweep_template):
    runs = load_runs([sweep_template])
    assert {configuration(run)["prune.output_rate"] for run in runs} == {0.1, 0.25}


@pytest.mark.slow  # renders figures: about 5 s
def test_figures_take_labels_title_and_metric(sweep_template, tmp_path, capsys):
    import matplotlib.image as mpimg

    folder = tmp_path / "figures"
    args = ["report", str(sweep_template), "--plot-dir", str(folder), "--label", "gentle", "--label", "harsh"]
    lth_ok(*args, "--title", "Two rates", "--metric", "test_accuracy", capsys=capsys)
    image = mpimg.imread(folder / "accuracy_vs_density.png")
    assert image.shape[1] > image.shape[0]  # the legend sits beside the axes: the figure grew wider
    code, out, err = lth_in_process(*args[:-2], capsys=capsys)
    assert not out
    assert code == 2 and "--label: 1 given for 2 arms (rate 0.2; rate 0.5)" in err and err.count("\n") == 1


def test_legends_name_arms_and_say_how_many_seeds(sweep_template):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lth.plots import accuracy_vs_density

    groups = group_runs(load_runs([sweep_template]))
    fig, ax = plt.subplots()
    accuracy_vs_density(ax, [(group, group.name()) for group in groups], "early_stop_test_accuracy")
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sorted(legend) == ["dense (round 0)", "rate 0.2", "rate 0.5"]
    assert "mean ± std over 2 seeds" in ax.get_title() and "at early stop" in ax.get_title()
    # the two arms' dense rounds sit at slightly different x, so equal values stay visible
    first_points = [line.get_xdata()[0] for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert len(set(first_points)) == 2
    plt.close(fig)
