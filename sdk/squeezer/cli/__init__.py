"""The ``squeezer`` command line (typer + rich). The core never imports this package.

``main()`` is the console script; ``app`` is the typer application (for ``typer.testing``).
"""

from __future__ import annotations

from collections.abc import Sequence

from squeezer.cli.app import app, command


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and exit with its code."""
    command().main(args=argv, prog_name="squeezer")


__all__ = ["app", "main"]
