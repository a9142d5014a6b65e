"""The typer application: the root group, global options and the commands.

Only typer, rich and the standard library are imported here and in the command modules at
import time; everything that needs torch is imported inside the command functions, so
``squeezer --help`` and ``squeezer plugins list`` stay fast and torch-free.
"""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from squeezer import __version__
from squeezer.cli import artifact, run
from squeezer.cli.errors import (
    INTERRUPTED,
    Abort,
    ClickException,
    CliError,
    NoArgsIsHelpError,
    classify,
    debug_requested,
    one_line,
    report,
)
from squeezer.cli.launch import error_file, write_error
from squeezer.cli.plugins import plugins_app
from squeezer.cli.recipe import recipe_app

PROG = "squeezer"

EPILOG = """\
Examples:

  squeezer run                         (the bundled PQK example: prune + 4-bit QAT + mutual KD)

  squeezer recipe validate recipe.toml

  squeezer run recipe.toml --out runs/a

  squeezer inspect runs/a/model.safetensors
"""


class SqueezerGroup(TyperGroup):
    """The root command: every error becomes one line on stderr and an exit code (see errors.py)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(argv)
        rank_errors = error_file()  # a rank of `squeezer run --nproc N`: the launcher reports errors, once
        say = report if rank_errors is None else functools.partial(_to_launcher, rank_errors)
        try:
            rv = super().main(args=argv, prog_name=prog_name or PROG, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0  # an Exit's code (--help, --version: 0)
        except KeyboardInterrupt:
            code = say(CliError("interrupted", INTERRUPTED), debug=False)
        except (Abort, typer.Abort):
            code = say(ClickException("aborted"), debug=False)
        except Exception as exc:
            if NoArgsIsHelpError is not None and isinstance(exc, NoArgsIsHelpError):
                # `squeezer recipe`: typer's rich help printed itself when the error was made
                if exc.format_message().strip():
                    typer.echo(exc.format_message())
                code = exc.exit_code
            else:
                code = say(exc, debug=debug)
        if rank_errors is not None:  # done: a Ctrl-C for the launcher now must not interrupt the exit
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if standalone_mode:
            sys.exit(code)
        return code

    # Ctrl-C while the arguments are parsed, or inside a command that has not handled it (e.g.
    # while torch is being imported): one line and 130, where typer would exit 130 silently
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise CliError("interrupted", INTERRUPTED) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise CliError("interrupted", INTERRUPTED) from None


app = typer.Typer(
    name=PROG,
    cls=SqueezerGroup,
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,  # help text is plain: [model] and squeezer[onnx] are not rich markup
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["--help", "-h"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks on errors (or set SQUEEZER_DEBUG=1).")
    ] = False,
) -> None:
    """Compress PyTorch models with recipes: pruning, quantization-aware training, distillation.

    Errors are one line on stderr; exit codes: 0 ok, 2 bad input, 1 failure during a run, 130 interrupted.
    """


run.register(app)
app.add_typer(plugins_app, name="plugins")
app.add_typer(recipe_app, name="recipe")
artifact.register(app)


def _to_launcher(path: Any, exc: BaseException, *, debug: bool) -> int:
    """A rank's error, written for the launcher to print (after the traceback, with --debug)."""
    code, message = classify(exc, debug=debug)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    write_error(path, code, one_line(message))
    return code


def command() -> Any:
    """The click command behind :data:`app` (a :class:`SqueezerGroup`)."""
    return typer.main.get_command(app)
