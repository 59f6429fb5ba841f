"""User-facing errors: printed as one line, no traceback, with a fixed exit code."""


class LthError(Exception):
    """Something the user can fix or should know about; the CLI prints it as one line."""

    exit_code = 1


class ConfigError(LthError):
    """Bad input (config, paths, data location), caught before any work starts."""

    exit_code = 2


class RunFailed(LthError):
    """A run stopped because an invariant broke or training diverged; finished rounds stay intact."""

    exit_code = 1


class OutputError(LthError):
    """An output (a figure, an exported ticket) could not be written where asked; the run itself is fine."""

    exit_code = 1


class Interrupted(LthError):
    """Ctrl-C or SIGTERM: the run saved its state and stopped; `lth resume` continues it."""

    exit_code = 130
