"""The `lth` command: `run` hands its arguments to Hydra; `resume`, `report`, `analyze` and `export` take run
directories.

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
  report PATH [PATH ...] [--json | --csv | --table markdown|csv|latex [--metric M]] [--group-by KEY[,KEY]]
         [--plot FILE.png] [--plot-dir DIR] [--rounds 0,3,6]
                         per-round table of a run; for several runs (a sweep) mean ± std over seeds per
                         configuration and round; --json/--csv: one row per (run, round); --plot: accuracy and
                         early-stop step vs density, layer densities, training curves (and LMC curves),
                         first-layer connectivity, mask overlap, dead units and train-test gap vs density
  analyze overlap DIR [--json]
                         per layer, Jaccard overlap of masks between consecutive rounds and between seeds
  analyze layers DIR [--json]
                         per round and layer: weights left, mean |w| of survivors at init, start and end
  analyze lmc DIR --round N[,N] [--points 11] [--json]
                         linear mode connectivity: train round N twice with different data orders, test error
                         along the line between them, the error barrier; saved in DIR/analysis/
  analyze speed DIR --round N [--repeats 40] [--threads T] [--json]
                         inference latency (batch 1) and throughput (batch 256) on CPU (and CUDA) of the
                         dense, masked and compacted network (2:4 sparse where supported), with parameters
                         and MACs; saved in DIR/analysis/
  export DIR --round N OUT [--weights final|start] [--format safetensors|torchscript] [--compact]
                         a standalone ticket: weights, mask and card.json (config, densities, FLOPs,
                         accuracy, command); lth.load_ticket(OUT) rebuilds the model; --compact: also the
                         smaller dense network without dead units (same outputs), its sizes and speed
  --version              the installed version of lth
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command, rest = (args[0], args[1:]) if args else ("", [])
    try:
        if command in ("run", "resume"):
            from lth import signals, ui

            ui.outlive_reader()  # a run trains on when the reader of its output goes (`lth run | head`)
            with signals.sigterm_interrupts():  # until a run handles it at a step boundary: exit 130, one line
                if command == "run":
                    run(rest)
                else:
                    resume(rest)
        elif command == "report":
            report(rest)
        elif command == "analyze":
            analyze(rest)
        elif command == "export":
            export(rest)
        elif command in ("", "-h", "--help", "help"):
            print(USAGE, end="")
        elif command in ("-V", "--version"):
            from lth import __version__

            print(f"lth {__version__}")
        else:
            raise ConfigError(
                f"unknown command {command!r}; choose one of: run, resume, report, analyze, export (lth --help)"
            )
        sys.stdout.flush()  # here, not at exit: a reader that has gone (`lth report | head`) is handled below
    except LthError as error:
        _fail(error)
    except BrokenPipeError:  # the reader of our output stopped reading (`| head`): it has what it wanted
        _silence_stdout()
        sys.exit(1)
    except KeyboardInterrupt:  # before a run has installed its own handling (imports, config, data)
        print("lth: interrupted before any round started", file=sys.stderr)
        sys.exit(130)


def run(args: list[str]) -> None:
    from lth import arguments, config, distributed, sweeps

    distributed.init()  # under torchrun: join the other ranks before anything else
    if distributed.world_size() > 1:
        args = [*args, *distributed.shared_output_dirs(args)]
    flag_args, overrides = arguments.split_flags(args)
    flags = {arg.split("=", 1)[0] for arg in flag_args if arg.startswith("-")}  # --cfg=job counts as --cfg
    multirun = bool(arguments.MULTIRUN_FLAGS & flags)
    arguments.check_flags(flag_args)
    elsewhere = arguments.CONFIG_FLAGS & flags or any(o.lstrip("+").startswith("hydra.searchpath") for o in overrides)
    arguments.check_overrides(overrides, multirun, own_configs=not elsewhere)  # group options from conf/ only
    sweeps.check_environment()
    recipe = config.recipe_overrides(overrides)
    overrides = [*recipe, *overrides]  # the command line's own choices come later, so they win
    args = [*flag_args, *overrides]
    if flags & {"--help", "-h"}:
        print(config.run_help(overrides))  # Hydra's own would list the schemas (base_model, ...) as options
        return
    if not (arguments.INFO_FLAGS | arguments.CONFIG_FLAGS).intersection(flags):
        _validate_jobs(overrides, multirun)
        if recipe:
            print(f"lth: the model's recipe: {' '.join(recipe)} (choose others on the command line)")
    from lth import hydra_app

    sys.argv = ["lth run", *args]
    hydra_app.main()
    sweeps.raise_for_failures()  # a sweep runs every job; failed ones are named once all have run


def _validate_jobs(overrides: list[str], multirun: bool) -> None:
    from lth import config, preflight

    jobs = [config.compose(job) for job in (config.expand_sweep(overrides) if multirun else [overrides])]
    for job in jobs:
        preflight.environment(job)
    if multirun:
        preflight.sweep_jobs(jobs)  # a single run's data is read once, by the run
    run_dirs = [o.partition("=")[2] for o in overrides if o.startswith("hydra.run.dir=")]
    if not multirun and run_dirs and "${" not in run_dirs[-1]:
        preflight.no_run_in(Path(run_dirs[-1]))  # before Hydra rewrites that run's .hydra/ with this command


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
    parser.add_argument(
        "overrides", nargs="*", help="only prune.rounds, ui.*, checkpoint.* and logger (others need --force)"
    )
    parser.add_argument("--force", action="store_true", help="allow any config change; recorded in run.json")
    parsed = parser.parse_args(args)
    from lth import distributed
    from lth.resume import resume as resume_runs

    distributed.init()  # `torchrun ... -m lth resume DIR` continues a data-parallel run
    resume_runs(parsed.path, parsed.overrides, force=parsed.force)


def report(args: list[str]) -> None:
    parser = _Parser(
        prog="lth report",
        description="Per-round results of runs; runs differing only by seed are aggregated (mean ± std).",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="path", help="runs, or folders of runs (sweeps)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object per (run, round)")
    output.add_argument("--csv", action="store_true", help="print one CSV line per (run, round)")
    output.add_argument(
        "--table",
        choices=("markdown", "csv", "latex"),
        help="a paper's table: density rows x arm columns, mean ± std over seeds, of --metric",
    )
    parser.add_argument(
        "--metric",
        choices=("early_stop_test_accuracy", "test_accuracy", "early_stop_step", "early_stop_test_bpc", "test_bpc"),
        help="what --table and the density figure show (default: the runs' headline at the validation-chosen early "
        "stop: test accuracy, or bits per character for language models)",
    )
    parser.add_argument(
        "--label", action="append", metavar="NAME", help="name of an arm in the figures, once per arm in table order"
    )
    parser.add_argument("--title", help="the figures' title (default: models, datasets and seeds)")
    parser.add_argument("--group-by", type=_keys, metavar="KEY[,KEY]", help="config keys that make a configuration")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="all figures in one PNG")
    parser.add_argument("--plot-dir", type=Path, metavar="DIR", help="one PNG per figure in DIR")
    parser.add_argument("--rounds", type=_rounds, metavar="N[,N]", help="rounds whose training curves to draw")
    parsed = parser.parse_args(args)
    from lth import report as reporting
    from lth import report_tables
    from lth.headline import group_headline

    runs = reporting.load_runs(parsed.paths)
    groups = reporting.group_runs(runs, parsed.group_by)
    for group in groups:  # say loudly when --group-by averaged different experiments as if they were seeds
        if merged := reporting.merged_keys(group):
            differ = "; ".join(f"{key} ({', '.join(map(str, values))})" for key, values in merged.items())
            print(f"lth report: warning: {group.name()} merges runs that differ in {differ}", file=sys.stderr)
    metric = parsed.metric or group_headline(groups).early_stop
    plotting = parsed.plot is not None or parsed.plot_dir is not None
    if plotting:
        from lth import plots

        plots.check_paths(parsed.plot, parsed.plot_dir)  # refuse bad plots before printing anything
        rounds = plots.check(groups, parsed.rounds, parsed.label)
    if parsed.table is not None:
        from lth import tables

        print(tables.render(groups, metric, parsed.table), end="")
    else:
        report_tables.print_report(runs, groups, parsed.json, parsed.csv, grouped=parsed.group_by is not None)
    if plotting:
        written = plots.render(
            groups, parsed.plot, parsed.plot_dir, rounds, metric, labels=parsed.label, title=parsed.title
        )
        if not (parsed.json or parsed.csv or parsed.table):  # keep machine-readable output clean
            for path in written:
                print(f"wrote {path}")


def analyze(args: list[str]) -> None:
    parser = _Parser(prog="lth analyze", description="Analyses of the masks and weights of finished rounds.")
    sub = parser.add_subparsers(
        dest="analysis", required=True, metavar="{overlap,layers,lmc,speed}", parser_class=_Parser
    )
    for name, text in (
        ("overlap", "Jaccard overlap of masks, per layer: consecutive rounds, and seeds at the same round"),
        ("layers", "per round and layer: weights remaining, mean |w| of survivors at init, start and end"),
        ("lmc", "linear mode connectivity of a round (Frankle et al. 2020): the error barrier between two copies"),
        ("speed", "inference latency and throughput of a round: dense, masked, compacted (and 2:4 where supported)"),
    ):
        command = sub.add_parser(name, prog=f"lth analyze {name}", description=text, help=text)
        where = "a run directory" if name == "speed" else "a run directory, or a folder of runs"
        command.add_argument("path", type=Path, help=where)
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "lmc":
            command.add_argument(
                "--round", type=_rounds, required=True, metavar="N[,N]", help="the rounds to analyse (e.g. 1,3,5)"
            )
            command.add_argument("--points", type=int, default=11, help="evenly spaced alphas in [0, 1] (11)")
        if name == "speed":  # lth.speed
            command.add_argument("--round", type=int, required=True, help="the round to time")
            command.add_argument("--repeats", type=int, default=40, help="timed calls per measurement, at most (40)")
            command.add_argument("--threads", type=int, help="torch CPU threads to time with (default: torch's)")
    parsed = parser.parse_args(args)
    from lth import analyze as analysis

    if parsed.analysis == "speed":
        from lth import speed

        if parsed.repeats < 1:
            raise ConfigError(f"--repeats {parsed.repeats}: need at least 1")
        if parsed.threads is not None:
            if parsed.threads < 1:
                raise ConfigError(f"--threads {parsed.threads}: need at least 1")
            import torch

            torch.set_num_threads(parsed.threads)
        speed.main_speed(parsed.path, parsed.round, as_json=parsed.json, repeats=parsed.repeats)
    elif parsed.analysis == "lmc":
        analysis.main_lmc(parsed.path, parsed.round, parsed.points, as_json=parsed.json)
    else:
        getattr(analysis, f"main_{parsed.analysis}")(parsed.path, as_json=parsed.json)


def export(args: list[str]) -> None:
    parser = _Parser(prog="lth export", description="Write a round's ticket as a standalone folder.")
    parser.add_argument("path", type=Path, help="a run directory")
    parser.add_argument("out", type=Path, help="the folder to create")
    parser.add_argument("--round", type=int, required=True, help="the round whose ticket to export")
    parser.add_argument(
        "--weights", choices=("final", "start"), default="final", help="trained (final) or rewound (start) weights"
    )
    parser.add_argument(
        "--format", choices=("safetensors", "torchscript"), default="safetensors", help="also a TorchScript module"
    )
    parser.add_argument(
        "--compact", action="store_true", help="also the smaller dense network without dead units (lth.compact)"
    )
    parsed = parser.parse_args(args)
    from lth import export as exporting

    card = exporting.export(
        parsed.path, parsed.round, parsed.out, weights=parsed.weights, fmt=parsed.format, compact=parsed.compact
    )
    accuracy, density = card["test_accuracy"], card["density"]
    print(f"wrote {parsed.out}: round {card['round']}, density {density:.2%}, test acc after training {accuracy:.2%}")
    if parsed.compact:  # lth.compact: what the compacted network saves, and what it buys on this machine
        from lth import speed

        sizes = card["compact"]["sizes"]
        print(
            f"compacted: {card['compact']['removed_units']} units removed, parameters {card['parameters']:,} -> "
            f"{sizes['compact']['parameters']:,}, MACs/example {card['macs_per_example']['dense']:,} -> "
            f"{sizes['compact']['macs']:,}"
        )
        speed_result = card["compact"]["speed"]
        speed.make_console().print(speed.table(speed_result, "Inference speed (also in card.json)"))
        speed.make_console().print(speed.caption(speed_result))


def _keys(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("expected config keys such as prune.rate,prune.retrain")
    return keys


def _rounds(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected round numbers such as 0,3,6, not {text!r}") from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is left in its buffer does not
    fail again (Python's own advice for SIGPIPE, docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing will flush it
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _fail(error: LthError) -> None:
    print(f"lth: error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
