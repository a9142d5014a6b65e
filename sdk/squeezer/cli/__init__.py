"""The ``squeezer`` command line (typer + rich). The core never imports this package.

``main()`` is the console script; ``app`` is the typer application (for ``typer.testing``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

INTERRUPTED = 130  # squeezer.cli.errors.INTERRUPTED, which may not be imported yet where it is needed


def _is_the_program() -> bool:
    """Whether this process is the ``squeezer`` command (the console script or ``python -m squeezer``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "squeezer.__main__":
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("squeezer", "squeezer.exe", "squeezer-script.py")


try:  # typer, rich and the command modules: a Ctrl-C here is one line and 130, not a traceback
    from squeezer.cli.app import app, command
except KeyboardInterrupt:
    if not _is_the_program():  # imported by other code: the interrupt is theirs to handle
        raise
    sys.stderr.write("error: interrupted\n")
    sys.exit(INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and exit with its code."""
    command().main(args=argv, prog_name="squeezer")


__all__ = ["app", "main"]
