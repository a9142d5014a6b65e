"""``squeezer run --nproc N``: the ranks under torch's elastic launcher (torchrun), in this process.

The launcher runs here rather than as a ``torchrun`` child so that what the user sees is one
report, not one per rank plus the launcher's traceback:

- each rank writes its error (exit code and one-line message) to a file instead of printing it,
  and this process prints each distinct message once, after all ranks ended;
- Ctrl-C reaches this process only (torchrun starts the ranks in their own sessions); the
  launcher passes one SIGINT to every rank, which finish their step and checkpoint (rank 0
  writes it), and this process prints one hint: the command to resume, ``--nproc N`` included.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezer.cli.errors import FAILURE, INTERRUPTED, CliError

#: Set for the ranks: the directory where each writes ``rank<N>.json`` when it fails.
ERRORS_ENV = "SQUEEZER_RANK_ERRORS"


def error_file() -> Path | None:
    """This rank's error file, when it was started by :func:`launch`."""
    directory = os.environ.get(ERRORS_ENV)
    if not directory:
        return None
    return Path(directory) / f"rank{os.environ.get('RANK', '0')}.json"


def write_error(path: Path, code: int, message: str) -> None:
    try:
        path.write_text(json.dumps({"code": code, "message": message}), encoding="utf-8")
    except OSError:  # the launcher will report the rank's exit code instead
        sys.stderr.write(f"error: {message}\n")


def launch(nproc: int, rank_args: Sequence[str], *, interrupted_hint: Any, debug: bool = False) -> int:
    """Run ``python -m squeezer RANK_ARGS`` in ``nproc`` ranks; return the exit code.

    ``interrupted_hint()`` gives the message for Ctrl-C (called once every rank has ended).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    if not debug:  # the launcher's own warnings ("Received 2 death signal ...") are not the user's business
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):  # each sets its own level (LOGLEVEL): set them all
                logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="squeezer-ranks-") as errors:
        os.environ[ERRORS_ENV] = errors
        # torchrun sets OMP_NUM_THREADS=1 for its ranks (with a warning) unless it is set; the ranks
        # set their own thread count (squeezer run --threads) in any case
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        args = parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "squeezer", *rank_args])
        try:
            torchrun(args)
            return 0
        except SignalException:  # Ctrl-C (or SIGTERM) here: the ranks got it and have ended
            raise CliError(str(interrupted_hint()), INTERRUPTED) from None
        except KeyboardInterrupt:  # before the launcher installed its handlers
            raise CliError(str(interrupted_hint()), INTERRUPTED) from None
        except ChildFailedError as exc:
            return _report(exc, Path(errors), interrupted_hint)
        finally:
            os.environ.pop(ERRORS_ENV, None)


def _report(exc: Any, errors: Path, interrupted_hint: Any) -> int:
    """Print each rank's error once (ranks that failed the same way: one line); return the code."""
    reports: dict[int, tuple[int, str]] = {}
    for path in sorted(errors.glob("rank*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            reports[int(path.stem[4:])] = (int(data["code"]), str(data["message"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for rank, failure in sorted(exc.failures.items()):
        if rank not in reports and failure.exitcode != INTERRUPTED:
            how = (f"was killed by signal {-failure.exitcode}" if failure.exitcode < 0
                   else f"exited with code {failure.exitcode}")
            reports[rank] = (FAILURE, f"rank {rank} {how} (see its output above)")
    if not reports or all(code == INTERRUPTED for code, _ in reports.values()):
        raise CliError(str(interrupted_hint()), INTERRUPTED)
    failed = {rank: r for rank, r in reports.items() if r[0] != INTERRUPTED}
    messages: dict[str, list[int]] = {}
    for rank, (_, message) in sorted(failed.items()):
        messages.setdefault(message, []).append(rank)
    several = len(messages) > 1
    for message, ranks in messages.items():
        prefix = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}: " if several else ""
        sys.stderr.write(f"error: {prefix}{message}\n")
    return failed[min(failed)][0]


def resume_command(recipe: Path | None, out_dir: Path, seed: int | None, nproc: int | None,
                   threads: int | None, resumable: bool, factories: Sequence[str] = ()) -> str:
    """The one-line hint after Ctrl-C: how to resume (or, before the first checkpoint, start again);
    ``factories``: the command's ``--model``/``--data`` arguments."""
    cmd = ["squeezer", "run", *([str(recipe)] if recipe is not None else []), *factories, "--out", str(out_dir)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if nproc is not None:
        cmd += ["--nproc", str(nproc)]
    if resumable:
        return f"interrupted; resume with: {shlex.join([*cmd, '--resume'])}"
    return f"interrupted before the first checkpoint; start again with: {shlex.join([*cmd, '--overwrite'])}"
