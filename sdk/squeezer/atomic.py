"""Atomic file replacement, the one way squeezer writes what a user keeps (checkpoints, artifacts,
ONNX files): readers see the old file or the whole new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file next to it, fsync it, keep the mode of
    the file it replaces, and rename it into place (then fsync the directory where the platform
    allows it). On failure the temporary file is removed and an ``OSError`` names ``path``;
    temporary files a process killed mid-write left behind are removed after a success."""
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o644
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        if exc.filename in (None, tmp):  # name the file the user knows
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    remove_stale_temp_files(target)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> None:
    """Remove the temporary files of ``path`` that a process killed mid-write left behind.

    Only names that :func:`tempfile.mkstemp` gave :func:`write_bytes`' temporary files
    (``.NAME.XXXXXXXX.tmp``) and only regular files: never anything else in the directory.
    """
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    try:
        entries = os.listdir(target.parent)
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry):
            stale = target.parent / entry
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(stale).st_mode):
                    os.unlink(stale)
