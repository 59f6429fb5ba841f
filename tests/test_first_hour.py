"""What a newcomer meets in the first hour: default folders that never collide, `lth --version`."""

from __future__ import annotations

import subprocess
import sys

from conftest import FAST, lth


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
