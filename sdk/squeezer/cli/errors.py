"""How the CLI reports errors: one line on stderr and an exit code, a traceback only with ``--debug``.

Exit codes: 0 success; 2 bad input (usage errors, missing files, invalid recipes, artifacts or
checkpoints); 1 a failure while a run was under way (or a bug); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import typer

from squeezer.errors import SqueezerError

# typer >= 0.2x vendors click (typer._click); older versions use click itself. Either way, the
# classes its parser raises are found from the public typer.BadParameter.
UsageError: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
NoArgsIsHelpError: Any = getattr(sys.modules[UsageError.__module__], "NoArgsIsHelpError", None)
Abort: Any = getattr(sys.modules[UsageError.__module__], "Abort", typer.Abort)

USAGE = 2
FAILURE = 1
INTERRUPTED = 130


class CliError(Exception):
    """An error the CLI reports as ``error: <message>`` with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunFailed(CliError):
    """A :class:`SqueezerError` raised after a run had started (exit code 1)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause), FAILURE)


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` anywhere among the options, or ``SQUEEZER_DEBUG`` set to a true value."""
    env = os.environ.get("SQUEEZER_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    options = list(argv)[: list(argv).index("--")] if "--" in argv else list(argv)
    return env or "--debug" in options


def one_line(message: str) -> str:
    """Collapse a message onto one line."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def echo_error(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)


def report(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (after its traceback when ``debug``); return the exit code."""
    code, message = classify(exc, debug=debug)
    if debug and not isinstance(exc, UsageError):
        traceback.print_exception(exc, file=sys.stderr)
    echo_error(message)
    return code


def classify(exc: BaseException, *, debug: bool = False) -> tuple[int, str]:
    """The exit code and the message for an exception that reached the top."""
    if isinstance(exc, CliError):
        return exc.exit_code, str(exc)
    if isinstance(exc, UsageError):
        prefix = ""
        if exc.ctx is not None:
            prefix = f"{exc.ctx.command_path}: "
        return exc.exit_code, f"{prefix}{exc.format_message()} (see --help)"
    if isinstance(exc, ClickException):
        return exc.exit_code, exc.format_message()
    if isinstance(exc, SqueezerError):
        return USAGE, str(exc)
    if isinstance(exc, FileNotFoundError):
        name = exc.filename if exc.filename is not None else ""
        return USAGE, f"{name}: no such file or directory" if name else str(exc)
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError):
        return USAGE, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    if isinstance(exc, OSError):
        return FAILURE, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    hint = "" if debug else " (rerun with --debug for the traceback)"
    return FAILURE, f"internal error: {type(exc).__name__}: {exc}{hint}"
