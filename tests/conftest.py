"""Shared fixtures: a finished run and a finished sweep made once per session by the real command (the helpers
they use are in helpers.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import FAST, lth


@pytest.fixture(scope="session")
def finished_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 2-round synthetic run made by the real command, shared read-only by the whole session."""
    folder = tmp_path_factory.mktemp("template")
    lth("run", *FAST, f"hydra.run.dir={folder / 'run'}", cwd=folder)
    return folder / "run"


@pytest.fixture
def fast_run(tmp_path: Path, finished_template: Path) -> Path:
    """A private copy of the finished 2-round synthetic run; returns its run directory."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_template, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def sweep_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep made by the real command, shared read-only by the whole session: seeds 0 and 1 ×
    prune.rate 0.2 and 0.5, 3 rounds each, on 8x8 synthetic images (the results tests' material)."""
    folder = tmp_path_factory.mktemp("sweep")
    sweep = folder / "sweep"
    grid = ["-m", "seed=0,1", "prune.rate=0.2,0.5", "dataset.input_shape=[1,8,8]"]
    lth("run", *grid, *FAST, f"hydra.sweep.dir={sweep}", cwd=folder)
    return sweep


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as a wide terminal shows them: rich wraps cells to $COLUMNS, and tests read whole cells."""
    monkeypatch.setenv("COLUMNS", "200")
