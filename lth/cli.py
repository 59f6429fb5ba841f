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
                         early-stop step vs density, layer densities, training curves (and LMC curves)
  analyze overlap DIR [--json]
                         per layer, Jaccard overlap of masks between consecutive rounds and between seeds
  analyze layers DIR [--json]
                         per round and layer: weights left, mean |w| of survivors at init, start and end
  analyze lmc DIR --round N [--points 11] [--json]
                         linear mode connectivity: train round N twice with different data orders, test error
                         along the line between them, the error barrier; saved in DIR/analysis/
  export DIR --round N OUT [--weights final|start] [--format safetensors|torchscript]
                         a standalone ticket: weights, mask and card.json (config, densities, FLOPs,
                         accuracy, command); lth.load_ticket(OUT) rebuilds the model
  --version              the installed version of lth
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
# Hydra flags whose value is the next argument, and `--info`'s optional topic.
_VALUED_FLAGS = _CONFIG_FLAGS | {"--cfg", "-c", "--package", "-p", "--shell-completion", "-sc"}
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Every flag Hydra's `lth run` accepts (with `--flag=value` forms split at "=").
_KNOWN_FLAGS = _INFO_FLAGS | _CONFIG_FLAGS | _MULTIRUN_FLAGS | {"--run", "-r", "--"}
# Hydra runs in one of these modes; naming two is an error (Hydra's own is a ValueError traceback).
_MODE_FLAGS = {
    "--run": "--run",
    "-r": "--run",
    "--multirun": "--multirun",
    "-m": "--multirun",
    "--cfg": "--cfg",
    "-c": "--cfg",
    "--info": "--info",
    "-i": "--info",
    "--shell-completion": "--shell-completion",
    "-sc": "--shell-completion",
}
_CFG_CHOICES = ("job", "hydra", "all")
_LEXER_ERROR = "LexerNoViableAltException: "


def split_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) and the overrides of an `lth run` command line, each in its order.

    Hydra's argparse takes the overrides as one positional list, so they must follow the flags in one piece:
    `lth run model=conv2 -m seed=0,1` and the recipe's overrides put in front both rely on this reordering."""
    flags: list[str] = []
    overrides: list[str] = []
    position = 0
    while position < len(args):
        arg = args[position]
        following = args[position + 1] if position + 1 < len(args) else None
        takes_value = arg in _VALUED_FLAGS or (arg in ("--info", "-i") and following in _INFO_TOPICS)
        if takes_value and following is not None:
            flags += [arg, following]
            position += 2
            continue
        (flags if arg.startswith("-") else overrides).append(arg)
        position += 1
    return flags, overrides


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
    from lth import config, distributed, sweeps

    distributed.init()  # under torchrun: join the other ranks before anything else
    if distributed.world_size() > 1:
        args = [*args, *distributed.shared_output_dirs(args)]
    flag_args, overrides = split_flags(args)
    flags = {arg.split("=", 1)[0] for arg in flag_args if arg.startswith("-")}  # --cfg=job counts as --cfg
    _check_flags(flag_args)
    _check_overrides(overrides, multirun=bool(_MULTIRUN_FLAGS & flags))
    sweeps.check_environment()
    recipe = config.recipe_overrides(overrides)
    overrides = [*recipe, *overrides]  # the command line's own choices come later, so they win
    args = [*flag_args, *overrides]
    if not (_INFO_FLAGS | _CONFIG_FLAGS).intersection(flags):
        _validate_jobs(overrides, multirun=bool(_MULTIRUN_FLAGS & flags))
        if recipe:
            print(f"lth: the model's recipe: {' '.join(recipe)} (choose others on the command line)")
    from lth import hydra_app

    sys.argv = ["lth run", *args]
    hydra_app.main()
    sweeps.raise_for_failures()  # a sweep runs every job; failed ones are named once all have run


def _check_flags(flag_args: list[str]) -> None:
    """Hydra's flags as one line each (Hydra's argparse prints its whole usage, then a ValueError for two modes)."""
    modes: list[str] = []
    for position, arg in enumerate(flag_args):
        if not arg.startswith("-") or (position and flag_args[position - 1] in _VALUED_FLAGS):
            continue  # a flag's value
        flag, equals, value = arg.partition("=")
        if flag not in _KNOWN_FLAGS:
            raise ConfigError(
                f"lth run: unknown flag {arg}; lth run takes Hydra's flags (-m, --cfg job, --help, --info, "
                "--config-name, ...) and overrides key=value (see lth run --help)"
            )
        following = flag_args[position + 1] if position + 1 < len(flag_args) else None
        if flag in _VALUED_FLAGS and not equals and following is None and flag not in ("--info", "-i"):
            raise ConfigError(f"lth run: {flag} needs a value (see lth run --help)")
        if flag in ("--cfg", "-c"):
            choice = value if equals else following
            if choice not in _CFG_CHOICES:
                raise ConfigError(f"lth run: {flag} {choice}: choose one of {', '.join(_CFG_CHOICES)}")
        if flag in _MODE_FLAGS and _MODE_FLAGS[flag] not in modes:
            modes.append(_MODE_FLAGS[flag])
    _check_config_name(flag_args)
    if len(modes) > 1:
        hint = ""
        if "--multirun" in modes and "--cfg" in modes:
            hint = "; to see a sweep job's config, run lth run --cfg job with that job's values"
        raise ConfigError(
            f"lth run: {' and '.join(modes)} cannot be combined (Hydra takes one of --run, --multirun, --cfg, "
            f"--info, --shell-completion){hint}"
        )


def _check_config_name(flag_args: list[str]) -> None:
    """`--config-name NAME` (lth's own config folder only: with --config-path/--config-dir Hydra looks elsewhere)
    must name a primary config there (Hydra's MissingConfigException is a page with a traceback hint)."""
    from lth import config

    values = dict(zip(flag_args, [*flag_args[1:], None], strict=False))
    named = {
        flag.partition("=")[0]: flag.partition("=")[2] for flag in flag_args if "=" in flag and flag.startswith("-")
    }
    if {"--config-path", "-cp", "--config-dir", "-cd"} & ({*values} | {*named}):
        return
    for flag in ("--config-name", "-cn"):
        name = named.get(flag) or values.get(flag)
        if name and not (config.CONF_DIR / f"{name.removesuffix('.yaml')}.yaml").is_file():
            primaries = sorted(p.stem for p in config.CONF_DIR.glob("*.yaml"))
            raise ConfigError(
                f"lth run: {flag} {name}: no such config in {config.CONF_DIR}; choose one of: {', '.join(primaries)} "
                "(or point --config-dir at your own)"
            )


def _check_overrides(overrides: list[str], multirun: bool) -> None:
    """Parse every override with Hydra's own grammar before Hydra runs, so a mistake is one line that says what
    to write instead (Hydra's messages are cut to their first line elsewhere, and lose their hints)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    from lth import config

    parser = OverridesParser.create()
    for position, line in enumerate(overrides):
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException as error:
            before = overrides[position - 1] if position else None
            raise ConfigError(_explain_parse_error(line, str(error), before)) from None
        except HydraException as error:
            raise ConfigError(f"cannot parse override {line!r}: {str(error).strip().splitlines()[0]}") from None
        key = override.key_or_group
        if not key:
            raise ConfigError(f"override {line!r} has no key; write key=value, e.g. prune.rate=0.3")
        if override.is_delete() and key in config.GROUPS:
            raise ConfigError(
                f"{line}: the {key} group cannot be removed, every run needs one; choose another with "
                f"{key}=<option>, one of: {', '.join(config.group_options(key))}"
            )
        if override.is_sweep_override() and not multirun:
            value = line.partition("=")[2]
            raise ConfigError(
                f"{line} sweeps over several values: add -m to run one job per value (lth run -m {line}); "
                f"for a list write {key}=[{value}], for a string quote it: {key}='{value}'"
            )


def _explain_parse_error(line: str, message: str, before: str | None) -> str:
    """One line for a Hydra override parse error: the offending character and how to quote it, or the grammar."""
    first = message.splitlines()[0] if message else ""
    key, equals, value = line.partition("=")
    if first.startswith(_LEXER_ERROR):
        lines = message.splitlines()
        caret = lines[1].find("^") - len(_LEXER_ERROR) if len(lines) > 1 else -1
        char = line[caret] if 0 <= caret < len(line) else None
        what = f"{char!r} cannot appear in an unquoted value" if char else "it holds a character Hydra cannot read"
        if "'" in value:
            return f'cannot parse override {line!r}: {what}; quote the value: {key}="{value}"'
        quoted = f"{key}='{value}'"
        return f'cannot parse override {line!r}: {what}; quote the value: {quoted} (on a shell: "{quoted}")'
    if not equals and not line.startswith("~"):
        joined = f" (if it belongs to {before!r} before it, quote that value: it holds a space)" if before else ""
        return f"cannot parse override {line!r}: an override is key=value, e.g. prune.rate=0.3{joined}"
    return f"cannot parse override {line!r}: {first} (Hydra's override grammar: key=value)"


def _validate_jobs(overrides: list[str], multirun: bool) -> None:
    from lth import config, preflight

    jobs = config.expand_sweep(overrides) if multirun else [overrides]
    for job in jobs:
        preflight.environment(config.compose(job))


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
    from lth import distributed, runs

    distributed.init()  # `torchrun ... -m lth resume DIR` continues a data-parallel run
    runs.resume(parsed.path, parsed.overrides, force=parsed.force)


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
        choices=("early_stop_test_accuracy", "test_accuracy", "early_stop_step"),
        default="early_stop_test_accuracy",
        help="what --table and the density figure show (default: test accuracy at the validation-chosen early stop)",
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

    runs = reporting.load_runs(parsed.paths)
    groups = reporting.group_runs(runs, parsed.group_by)
    for group in groups:  # say loudly when --group-by averaged different experiments as if they were seeds
        if merged := reporting.merged_keys(group):
            differ = "; ".join(f"{key} ({', '.join(map(str, values))})" for key, values in merged.items())
            print(f"lth report: warning: {group.name()} merges runs that differ in {differ}", file=sys.stderr)
    plotting = parsed.plot is not None or parsed.plot_dir is not None
    if plotting:
        from lth import plots

        plots.check_paths(parsed.plot, parsed.plot_dir)  # refuse bad plots before printing anything
        rounds = plots.check(groups, parsed.rounds, parsed.label)
    if parsed.table is not None:
        from lth import tables

        print(tables.render(groups, parsed.metric, parsed.table), end="")
    else:
        reporting.print_report(runs, groups, parsed.json, parsed.csv, grouped=parsed.group_by is not None)
    if plotting:
        written = plots.render(
            groups, parsed.plot, parsed.plot_dir, rounds, parsed.metric, labels=parsed.label, title=parsed.title
        )
        if not (parsed.json or parsed.csv or parsed.table):  # keep machine-readable output clean
            for path in written:
                print(f"wrote {path}")


def analyze(args: list[str]) -> None:
    parser = _Parser(prog="lth analyze", description="Analyses of the masks and weights of finished rounds.")
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="{overlap,layers,lmc}", parser_class=_Parser)
    for name, text in (
        ("overlap", "Jaccard overlap of masks, per layer: consecutive rounds, and seeds at the same round"),
        ("layers", "per round and layer: weights remaining, mean |w| of survivors at init, start and end"),
        ("lmc", "linear mode connectivity of a round (Frankle et al. 2020): the error barrier between two copies"),
    ):
        command = sub.add_parser(name, prog=f"lth analyze {name}", description=text, help=text)
        command.add_argument("path", type=Path, help="a run directory, or a folder of runs")
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "lmc":
            command.add_argument("--round", type=int, required=True, help="the round to analyse")
            command.add_argument("--points", type=int, default=11, help="evenly spaced alphas in [0, 1] (11)")
    parsed = parser.parse_args(args)
    from lth import analyze as analysis

    if parsed.analysis == "lmc":
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
    parsed = parser.parse_args(args)
    from lth import export as exporting

    card = exporting.export(parsed.path, parsed.round, parsed.out, weights=parsed.weights, fmt=parsed.format)
    accuracy, density = card["test_accuracy"], card["density"]
    print(f"wrote {parsed.out}: round {card['round']}, density {density:.2%}, test acc after training {accuracy:.2%}")


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
