"""A run's output directory: one run at a time (a lock file), and what ``overwrite`` may delete.

Torch-free, so that it can be tested (and held by a test's helper process) cheaply.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from types import TracebackType

from squeezer.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".squeezer.lock"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "last.safetensors"
ARTIFACT_NAME = "model.safetensors"


# Descriptors of the locks this process holds. A forked child (a DataLoader worker) closes its
# copies at once, so the lock dies with the run's process, not with its last worker.
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _temp_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`tempfile.mkstemp` gives the temporary files of ``name`` (``.NAME.XXXXXXXX.tmp``)."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def own_files(out_dir: Path) -> list[Path]:
    """The files a run writes into ``out_dir`` that exist now: the checkpoint, the artifact and
    their temporary files (left by a process killed mid-write). Nothing else is squeezer's."""
    found = []
    for directory, name in ((out_dir / CHECKPOINT_DIR, CHECKPOINT_NAME), (out_dir, ARTIFACT_NAME)):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        pattern = _temp_pattern(name)
        for entry in entries:
            if entry == name or pattern.fullmatch(entry):
                path = directory / entry
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        found.append(path)
    return found


def remove_own_files(out_dir: Path) -> None:
    """What ``overwrite`` deletes: :func:`own_files`, then ``checkpoints/`` if that left it empty.
    Files the user put into the directory (``checkpoints/`` included) are never touched."""
    for path in own_files(out_dir):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, absent, or not a directory: left alone
        (out_dir / CHECKPOINT_DIR).rmdir()


def has_user_content(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds anything but the lock file (of this or an earlier, killed run)."""
    try:
        return any(entry.name != LOCK_NAME for entry in out_dir.iterdir())
    except FileNotFoundError:
        return False


class OutputLock:
    """``with OutputLock(out_dir):`` holds an exclusive ``flock`` on ``out_dir/.squeezer.lock``.

    A second run into the same directory is refused at once (:class:`ConfigError`) instead of
    both writing the same checkpoint. The lock is released on every way out of the block, and by
    the kernel when the process dies (SIGKILL included), so a killed run never blocks its resume.
    The lock file is removed on release (while still locked; a run that opened the removed file
    notices and locks the new one), and so is ``out_dir`` if the block created it and left it empty.
    ``enabled=False`` (the other ranks under torchrun: rank 0 holds the lock) does nothing.
    """

    def __init__(self, out_dir: Path, *, enabled: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.enabled = enabled and fcntl is not None
        self._fd: int | None = None
        self._pid = os.getpid()
        self._created = False

    def __enter__(self) -> OutputLock:
        if not self.enabled:
            return self
        self._created = not self.out_dir.exists()
        for _ in range(100):  # each retry means another run removed the file we opened: rare
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"{self.out_dir}: another squeezer run is using this output directory (it holds "
                    f"{LOCK_NAME}); wait for it to end, or choose another output directory"
                ) from None
            except OSError:  # a filesystem without locks (ENOLCK): run unlocked, as before locks
                os.close(fd)
                return self
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                self._fd, self._pid = fd, os.getpid()
                _HELD.add(fd)
                return self
            os.close(fd)
        raise ConfigError(f"{self.path}: cannot lock the output directory (the lock file keeps changing)")

    def _open(self) -> int:
        for _ in range(100):
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except FileNotFoundError:  # the directory was removed between mkdir and open: again
                continue
            except OSError as exc:
                raise ConfigError(
                    f"{self.path}: cannot create the run's lock file: {exc.strerror or exc}"
                ) from None
        raise ConfigError(f"{self.out_dir}: cannot create the output directory (it keeps disappearing)")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if os.getpid() != self._pid:  # a forked child leaving the block: the lock is its parent's
            return
        _HELD.discard(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # still locked: no other run holds this file
        os.close(fd)  # releases the lock
        if self._created:
            with contextlib.suppress(OSError):  # only if the run left it empty
                self.out_dir.rmdir()
