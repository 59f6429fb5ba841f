"""The Hydra entry point behind `lth run`: Hydra composes the config, creates the run directory, runs jobs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth import config, imp
from lth.errors import ConfigError, LthError


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(composed: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = config.from_dictconfig(composed)
        imp.run(cfg, run_dir, new_run=True)
    except LthError as error:
        if isinstance(error, ConfigError):
            _discard_if_unused(run_dir)
        # Hydra would print a traceback for any exception; SystemExit passes through it untouched.
        print(f"lth: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def _discard_if_unused(run_dir: Path) -> None:
    """Remove the run directory Hydra made for this job when bad input stopped it before lth wrote anything
    (e.g. a data file that turned out unreadable): bad input leaves nothing on disk."""
    if [p.name for p in run_dir.iterdir()] != [".hydra"]:
        return
    shutil.rmtree(run_dir)
    if Path.cwd() not in run_dir.parents:  # only folders Hydra made under the working directory go too
        return
    for parent in run_dir.parents:  # outputs/<date>/ too, when this job made it: rmdir only removes empty ones
        if parent == Path.cwd():
            break
        try:
            parent.rmdir()
        except OSError:
            break
