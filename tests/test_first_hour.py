"""What a newcomer meets in the first hour: default folders that never collide, `lth --version`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import FAST, lth


@pytest.mark.slow  # two interpreters at once: about 7 s
def test_two_runs_started_together_get_folders_of_their_own(tmp_path):
    command = [sys.executable, "-m", "lth", "run", *FAST, "prune.rounds=0"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = [subprocess.Popen(command, cwd=tmp_path, **pipes) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.communicate()[1]
    (day,) = (tmp_path / "outputs").iterdir()
    folders = sorted(day.iterdir())
    assert len(folders) == 2 and all((folder / "round_00" / "metrics.json").is_file() for folder in folders)


def test_version(tmp_path):
    from lth import __version__

    assert lth("--version", cwd=tmp_path).stdout.strip() == f"lth {__version__}"


def test_a_log_gets_progress_lines_at_a_steady_rhythm():
    """Without a terminal (SLURM logs, `| tee`): a line each 10% of a round or each minute, never wrapped."""
    import io

    from rich.console import Console

    from lth.ui import RunDisplay

    now = [0.0]
    out = io.StringIO()
    display = RunDisplay(live=True, console=Console(file=out, width=240), clock=lambda: now[0])
    assert display.log_lines and not display.live
    display.start_round(1, 0.8, total_steps=1000, steps_per_epoch=500)
    for step in range(20, 1000, 20):
        now[0] = step * 0.01  # 10 s for the round: the 10% rule decides
        display.step(step, 0.5, 0.9)
    first, *lines = out.getvalue().splitlines()
    assert first == "round 1 · density 80.0% · training steps 1-1000"  # when training, not start-up, begins
    assert len(lines) == 9 and lines[0].startswith("round 1 · density 80.0% · epoch 1/2 · step 100/1000 (10%)")
    assert "eta 0m09s" in lines[0]
    now[0] = 0.0
    display.start_round(2, 0.64, total_steps=100_000, steps_per_epoch=50_000)
    display.step(20, 0.5, 0.9)
    now[0] = 61.0  # a slow round: the minute rule decides
    display.step(40, 0.5, 0.9)
    assert len(out.getvalue().splitlines()) == 12 and "step 40/100000" in out.getvalue().splitlines()[-1]


@pytest.mark.parametrize("width", [80, 200])
def test_the_progress_bar_keeps_its_step_count_and_eta_in_any_terminal(width):
    import io

    from rich.console import Console

    from lth.ui import RunDisplay

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    with RunDisplay(live=True, console=console) as display:
        display.start_round(12, 0.036, total_steps=50_000, steps_per_epoch=917)
        display.step(45_020, 0.1234, 0.987)
        display._progress.refresh()
    shown = [line for line in out.getvalue().replace("\r", "\n").splitlines() if "45020/50000" in line]
    assert shown and all(len(line) <= width for line in shown) and "eta" in shown[-1]
    assert ("acc 98.70%" in shown[-1]) == (width > 80)  # a narrow bar gives up the accuracy first


def test_ui_width_sets_the_output_width():
    from lth.ui import RunDisplay

    assert RunDisplay(live=False, width=100).console.width == 100


@pytest.mark.slow  # real MNIST-format data through a run and an export: about 12 s
def test_an_exported_ticket_is_right_on_unit_and_raw_inputs(tmp_path):
    """The card carries the input normalisation; load_ticket(inputs="unit") takes [0, 1] images, as ToTensor gives."""
    import json

    import torch
    from helpers import write_mnist_like

    from lth import data, load_ticket
    from lth.config import compose

    write_mnist_like(tmp_path / "idx", n_train=300, n_test=60)
    overrides = ["dataset=mnist", f"dataset.root={tmp_path / 'idx'}", "dataset.val_size=50"]
    fast = ["train.epochs=1", "train.batch_size=50", "train.eval_every=5", "ui.progress=false"]  # +debug=fast's
    lth("run", *overrides, *fast, "prune.rounds=1", "hydra.run.dir=run", cwd=tmp_path)
    lth("export", "run", "--round", "1", "ticket", cwd=tmp_path)
    card = json.loads((tmp_path / "ticket" / "card.json").read_text())
    assert card["inputs"]["stored_dtype"] == "uint8" and len(card["inputs"]["mean"]) == 1
    dataset = data.load(compose(overrides).dataset, 0, torch.device("cpu"))
    pixels = data.idx.read_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte")
    unit = torch.from_numpy(pixels.copy()).float().unsqueeze(1) / 255
    expected = load_ticket(tmp_path / "ticket")(dataset.test.x)
    assert torch.allclose(load_ticket(tmp_path / "ticket", inputs="unit")(unit), expected, atol=1e-4)
    assert torch.allclose(load_ticket(tmp_path / "ticket", inputs="raw")(unit * 255), expected, atol=1e-4)


def test_a_run_names_its_folder_first_and_warns_where_early_stopping_cannot_choose(tmp_path, capsys):
    from helpers import lth_ok

    run_dir = tmp_path / "run"
    printed = lth_ok(
        "run", *FAST, "prune.rounds=0", "train.eval_every=1000", "prune.retrain=lr_rewind",
        f"hydra.run.dir={run_dir}", capsys=capsys,
    )  # fmt: skip
    lines = printed.splitlines()
    assert lines[0] == f"lenet_300_100 on synthetic, seed 0: {run_dir} (round 0 of 0; if stopped: lth resume {run_dir})"
    assert "warning: train.eval_every=1000 evaluates once in a round of 10 steps" in printed
    assert "note: prune.retrain=lr_rewind on train.lr_schedule=constant" in printed and "fine-tuning" in printed


def test_replicates_end_with_the_mean_and_std_over_their_seeds(tmp_path, capsys):
    from helpers import lth_ok

    printed = lth_ok(
        "run", *FAST, "prune.rounds=1", "train.replicates=2", f"hydra.run.dir={tmp_path / 'group'}", capsys=capsys
    )
    assert "seeds 0, 1: mean ± std over 2 seeds" in printed and "±" in printed.split("mean ± std over 2 seeds")[1]


def test_the_read_side_and_the_help_start_without_torch(sweep_template, tmp_path):
    """`lth report`, `lth run --cfg job` and `lth --help` never import torch (start-up: a report only reads JSON)."""
    import json
    import subprocess
    import sys

    probe = (
        "import sys, contextlib, io\n"
        "from lth.cli import main\n"
        "for argv in {argvs!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        sys.argv = ['lth', *argv]\n"
        "        main(argv)\n"
        "print('torch' in sys.modules)\n"
    )
    for argv in (["report", str(sweep_template), "--json"], ["run", "--cfg", "job"], ["--help"]):
        code = probe.format(argvs=[argv])
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == "False", (argv, out.stdout, out.stderr)
    assert json.loads(subprocess.run(
        [sys.executable, "-m", "lth", "report", str(sweep_template), "--json"], capture_output=True, text=True
    ).stdout)  # fmt: skip


def test_an_eager_run_never_imports_torch_dynamo(tmp_path):
    """torch's optimiser guards and meta-device kernels import torch._dynamo on first use, 2.5-3.5 s of start-up;
    an eager run (the model-fit check, rounds with training, evaluation and checkpoints) never needs it."""
    import subprocess
    import sys

    argv = ["run", *FAST, "prune.rounds=1", "train.replicates=2", f"hydra.run.dir={tmp_path / 'run'}"]
    code = (
        "import sys, contextlib, io\n"
        "from lth.cli import main\n"
        f"sys.argv = ['lth', *{argv!r}]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(sys.argv[1:])\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1:] == ["False"], (out.stdout, out.stderr)
    assert (tmp_path / "run" / "seed_1" / "round_01" / "metrics.json").is_file()
