"""The `lth` command: `run` hands its arguments to Hydra; `resume` and `report` take a run directory.

`lth run` composes and validates the config of every job (all of a `-m` sweep's jobs, those an experiment
preset sweeps under `hydra.sweeper.params` included) and checks that the data can be found before Hydra creates
any output directory, so bad input costs one line on stderr, exit code 2 and nothing on disk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lth.errors import ConfigError, LthError

USAGE = """usage: lth COMMAND [ARGS]

commands:
  run [OVERRIDES]        run an IMP experiment; Hydra overrides such as prune.rate=0.3 train.epochs=2,
                         -m for a sweep (seed=0,1,2), --help for the config, --cfg job to print it
  resume PATH [prune.rounds=N] [--force]
                         continue a stopped run (or every unfinished run under PATH) from its newest
                         intact state; prune.rounds=N extends a finished run
  report PATH [--json]   per-round table (or JSON rows) of a run, or of every run under PATH
"""

# Hydra flags that only print information: no job runs, so there is nothing to validate up front.
_INFO_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
    "--resolve",
    "-p",
    "--package",
}
# Flags that point Hydra at another primary config; their value follows as the next argument.
_CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_MULTIRUN_FLAGS = {"-m", "--multirun"}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    try:
        if command == "run":
            run(rest)
        elif command == "resume":
            resume(rest)
        elif command == "report":
            report(rest)
        elif command in ("", "-h", "--help", "help"):
            print(USAGE, end="")
        else:
            raise ConfigError(f"unknown command {command!r}; choose one of: run, resume, report (lth --help)")
    except LthError as error:
        _fail(error)
    except KeyboardInterrupt:  # before a run has installed its own handling (imports, config, data)
        print("lth: interrupted before any round started", file=sys.stderr)
        sys.exit(130)


def run(args: list[str]) -> None:
    from lth import config, distributed

    distributed.init()  # under torchrun: join the other ranks before anything else
    if distributed.world_size() > 1:
        args = [*args, *distributed.shared_output_dirs(args)]
    flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("-")}  # --cfg=job counts as --cfg
    recipe = config.recipe_overrides([a for a in args if not a.startswith("-")])
    args = [*recipe, *args]
    if not (_INFO_FLAGS | _CONFIG_FLAGS).intersection(flags):
        _validate_jobs(args)
        if recipe:
            print(f"lth: the model's recipe: {' '.join(recipe)} (choose others on the command line)")
    from lth import hydra_app, sweeps

    sys.argv = ["lth run", *args]
    hydra_app.main()
    sweeps.raise_for_failures()  # a sweep runs every job; failed ones are named once all have run


def _validate_jobs(args: list[str]) -> None:
    from lth import config, imp

    overrides = [a for a in args if not a.startswith("-")]
    jobs = config.expand_sweep(overrides) if _MULTIRUN_FLAGS.intersection(args) else [overrides]
    for job in jobs:
        imp.preflight(config.compose(job))


class _Parser(argparse.ArgumentParser):
    """argparse with lth's error convention: one line, exit code 2 (not usage text plus a message)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def resume(args: list[str]) -> None:
    parser = _Parser(
        prog="lth resume",
        description="Continue stopped runs from their newest intact state; extend them with prune.rounds=N.",
    )
    parser.add_argument("path", type=Path, help="a run directory, or a folder of runs such as a sweep")
    parser.add_argument("overrides", nargs="*", help="only prune.rounds, ui.* and checkpoint.* (others need --force)")
    parser.add_argument("--force", action="store_true", help="allow any config change; recorded in run.json")
    parsed = parser.parse_args(args)
    from lth import distributed, imp

    distributed.init()  # `torchrun ... -m lth resume DIR` continues a data-parallel run
    imp.resume(parsed.path, parsed.overrides, force=parsed.force)


def report(args: list[str]) -> None:
    parser = _Parser(prog="lth report", description="Per-round results of a run or of all runs under a folder.")
    parser.add_argument("path", type=Path, help="a run directory, or a folder holding runs (e.g. a sweep)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per (run, round)")
    parsed = parser.parse_args(args)
    from lth import report as reporting

    reporting.print_report(parsed.path, parsed.json)


def _fail(error: LthError) -> None:
    print(f"lth: error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
