"""`lth run`'s command line before Hydra sees it: Hydra's flags apart from the overrides, each checked in one line.

Hydra's own argparse prints its whole usage for a wrong flag and a traceback for two modes; its override parser
loses its hints when cut to one line. Here every flag and override is checked first, and a mistake is one line
that says what to write instead (exit 2, nothing on disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lth.errors import ConfigError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

# Hydra flags that only print information: no job runs, so there is nothing to validate up front.
INFO_FLAGS = {
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
CONFIG_FLAGS = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
# Hydra flags whose value is the next argument, and `--info`'s optional topic.
VALUED_FLAGS = CONFIG_FLAGS | {"--cfg", "-c", "--package", "-p", "--shell-completion", "-sc"}
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
# Every flag Hydra's `lth run` accepts (with `--flag=value` forms split at "=").
KNOWN_FLAGS = INFO_FLAGS | CONFIG_FLAGS | MULTIRUN_FLAGS | {"--run", "-r", "--"}
# Hydra runs in one of these modes; naming two is an error (Hydra's own is a ValueError traceback).
MODE_FLAGS = {
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
CFG_CHOICES = ("job", "hydra", "all")
LEXER_ERROR = "LexerNoViableAltException: "


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
        takes_value = arg in VALUED_FLAGS or (arg in ("--info", "-i") and following in INFO_TOPICS)
        if takes_value and following is not None:
            flags += [arg, following]
            position += 2
            continue
        (flags if arg.startswith("-") else overrides).append(arg)
        position += 1
    return flags, overrides


def check_flags(flag_args: list[str]) -> None:
    """Hydra's flags as one line each (Hydra's argparse prints its whole usage, then a ValueError for two modes)."""
    modes: list[str] = []
    for position, arg in enumerate(flag_args):
        if not arg.startswith("-") or (position and flag_args[position - 1] in VALUED_FLAGS):
            continue  # a flag's value
        flag, equals, value = arg.partition("=")
        if flag not in KNOWN_FLAGS:
            raise ConfigError(
                f"lth run: unknown flag {arg}; lth run takes Hydra's flags (-m, --cfg job, --help, --info, "
                "--config-name, ...) and overrides key=value (see lth run --help)"
            )
        following = flag_args[position + 1] if position + 1 < len(flag_args) else None
        if flag in VALUED_FLAGS and not equals and following is None and flag not in ("--info", "-i"):
            raise ConfigError(f"lth run: {flag} needs a value (see lth run --help)")
        if flag in ("--cfg", "-c"):
            choice = value if equals else following
            if choice not in CFG_CHOICES:
                raise ConfigError(f"lth run: {flag} {choice}: choose one of {', '.join(CFG_CHOICES)}")
        if flag in MODE_FLAGS and MODE_FLAGS[flag] not in modes:
            modes.append(MODE_FLAGS[flag])
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


def check_overrides(overrides: list[str], multirun: bool, own_configs: bool = True) -> None:
    """Parse every override with Hydra's own grammar before Hydra runs, so a mistake is one line that says what
    to write instead (Hydra's messages are cut to their first line elsewhere, and lose their hints).
    `own_configs`: the groups are lth's (no --config-dir pointing elsewhere), so their options are known."""
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
        if own_configs and key in config.user_groups() and not override.is_delete():
            _check_group_options(key, override)
        if override.is_sweep_override() and not multirun:
            value = line.partition("=")[2]
            raise ConfigError(
                f"{line} sweeps over several values: add -m to run one job per value (lth run -m {line}); "
                f"for a list write {key}=[{value}], for a string quote it: {key}='{value}'"
            )


def _check_group_options(group: str, override: Override) -> None:
    """A group's option is one of the names in `conf/<group>/`, nothing else: not a path (`model=../x` would load
    a YAML from anywhere) and not a schema stored for the YAML files (`model=base_model`)."""
    from hydra.errors import HydraException

    from lth import config

    try:
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
    except HydraException:  # glob(): Hydra's sweeper alone expands it; the sweep check says so in one line
        return
    options = config.group_options(group)
    for option in values:
        if option not in options:
            raise ConfigError(f"{group}={option}: no such {group}; choose one of: {', '.join(options)}")


def _explain_parse_error(line: str, message: str, before: str | None) -> str:
    """One line for a Hydra override parse error: the offending character and how to quote it, or the grammar."""
    first = message.splitlines()[0] if message else ""
    key, equals, value = line.partition("=")
    if first.startswith(LEXER_ERROR):
        lines = message.splitlines()
        caret = lines[1].find("^") - len(LEXER_ERROR) if len(lines) > 1 else -1
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
