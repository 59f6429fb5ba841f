"""Every `lth run` command line the README shows composes as written: flags, recipes and presets in any order."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import FAST, lth

from lth import arguments, config
from lth.structured import LOGGER_PACKAGES

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_run_lines() -> list[str]:
    """The `lth run ...` lines of the README's bash blocks (comments and line continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    return [line for line in lines if line.startswith(("lth run", "torchrun"))]


def overrides_of(line: str, placeholder_run: str) -> tuple[list[str], bool]:
    words = shlex.split(line.replace("TICKET", placeholder_run).replace("SWEEP", placeholder_run))
    words = words[words.index("run") + 1 :]
    flags, overrides = arguments.split_flags(words)
    return [*config.recipe_overrides(overrides), *overrides], bool({"-m", "--multirun"} & set(flags))


def test_the_readme_shows_run_commands():
    assert len(readme_run_lines()) >= 30


@pytest.mark.parametrize("line", readme_run_lines())
def test_every_readme_run_command_composes(line, tmp_path):
    for logger, (module, _, _) in LOGGER_PACKAGES.items():  # an optional extra: composing checks it is installed
        if f"logger={logger}" in line.split():
            pytest.importorskip(module)
    overrides, multirun = overrides_of(line, str(tmp_path))
    jobs = config.expand_sweep(overrides) if multirun else [overrides]
    for job in jobs:
        config.compose([o for o in job if not o.startswith("hydra")])


def test_flags_are_split_from_overrides_wherever_they_stand():
    words = ["model=conv2", "-m", "seed=0,1", "--cfg", "job", "--info", "searchpath", "a=1"]
    flags, overrides = arguments.split_flags(words)
    assert flags == ["-m", "--cfg", "job", "--info", "searchpath"]
    assert overrides == ["model=conv2", "seed=0,1", "a=1"]


@pytest.mark.slow  # a conv-2 sweep in a subprocess: about 12 s (every README line composes in the fast suite)
def test_a_sweep_of_a_model_with_a_recipe_runs(tmp_path):
    """The recipe's overrides go before the user's, after the flags: Hydra's argparse takes one override list."""
    result = lth(
        "run", "-m", "model=conv2", *FAST, "dataset.like=cifar10", "prune.rounds=0", "seed=0,1",
        "dataset.train_size=100", "dataset.val_size=20", "dataset.test_size=20", "train.batch_size=20",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )  # fmt: skip
    assert "the model's recipe" in result.stdout
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]
    printed = lth("run", "--cfg", "job", "model=resnet20", cwd=tmp_path).stdout
    assert "name: resnet20" in printed and "cifar10" in printed


@pytest.mark.slow  # builds and installs a wheel: about 10 s
def test_a_wheel_install_runs_from_another_directory(tmp_path):
    """`pip install` (not editable) ships the config groups: compose and a tiny real run outside the checkout."""
    import subprocess
    import sys

    root = README.parent
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", root], check=True)
    (wheel,) = (tmp_path / "dist").glob("lth-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}  # before the checkout's editable install on sys.path
    where = subprocess.run(
        [sys.executable, "-c", "import lth.config as c; print(c.CONF_DIR)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where.stdout
    assert "name: conv2" in lth("run", "--cfg", "job", "model=conv2", cwd=elsewhere, env=env).stdout
    lth("run", *FAST, "prune.rounds=1", "hydra.run.dir=wheel_run", cwd=elsewhere, env=env)
    assert (elsewhere / "wheel_run" / "round_01" / "metrics.json").is_file()
