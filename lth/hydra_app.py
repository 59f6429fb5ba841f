"""The Hydra entry point behind `lth run`: Hydra composes the config, creates the run directory, runs jobs."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth import config, imp
from lth.errors import LthError


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(composed: DictConfig) -> None:
    try:
        cfg = config.from_dictconfig(composed)
        imp.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except LthError as error:
        # Hydra would print a traceback for any exception; SystemExit passes through it untouched.
        print(f"lth: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
