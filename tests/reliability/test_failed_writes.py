"""A checkpoint write that fails half way (full disk), and output directories that already exist."""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import squeezer
from squeezer import atomic
from squeezer.cli import app
from squeezer.pipeline import checkpoint
from squeezer.pipeline.events import Checkpointed
from squeezer.pipeline.loop import CHECKPOINT as CKPT  # checkpoints/last.safetensors
from squeezer.recipe import parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))

RECIPE = """
seed = 4
[model]
factory = "helpers:tiny"
[data]
factory = "helpers:loaders"
[[stages]]
type = "train"
epochs = 3
"""


def _full_disk() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _HalfWriter:
    """A file object that writes half of what it is given, then finds the disk full."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise _full_disk()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _fail_second_write(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make the second checkpoint write fail at ``how`` ('write', 'fsync' or 'replace')."""
    calls = {"n": 0}

    def nth() -> bool:
        calls["n"] += 1
        return calls["n"] == 2

    if how == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(atomic.os, "fdopen",
                            lambda fd, *a, **k: _HalfWriter(real_fdopen(fd, *a, **k)) if nth()
                            else real_fdopen(fd, *a, **k))
    elif how == "fsync":
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode) and nth():  # the file's fsync, not its directory's
                raise _full_disk()
            real_fsync(fd)

        monkeypatch.setattr(atomic.os, "fsync", fsync)
    else:
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if nth():
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(src), None, str(dst))
            real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "replace", replace)


@pytest.mark.parametrize("how", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_previous_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    out = tmp_path / "out"
    first: list[bytes] = []

    def sink(event: object) -> None:
        if isinstance(event, Checkpointed) and not first:
            first.append(Path(event.path).read_bytes())

    _fail_second_write(monkeypatch, how)
    with pytest.raises(OSError) as info:
        squeezer.run(parse_recipe(RECIPE), out=out, sink=sink)
    assert info.value.filename == str(out / CKPT), info.value  # names the checkpoint, not the temp file
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.safetensors"]  # no temp file left
    assert (out / CKPT).read_bytes() == first[0]
    _, meta = checkpoint.load(out / CKPT)
    assert (meta["stage"], meta["epoch"]) == (0, 1)
    result = squeezer.run(parse_recipe(RECIPE), out=out, resume=True)
    assert result.artifact is not None and result.artifact.exists()


def test_a_full_disk_through_the_cli_is_one_line_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    _fail_second_write(monkeypatch, "fsync")
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'out' / CKPT}: No space left on device"], result.stderr


# --- an output directory that exists ------------------------------------------------------------


def _cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_never_overwrites_silently(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    refused = _cli("run", recipe, "--out", out, "--quiet")
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {out}: output directory is not empty; pass --resume to continue or --overwrite to replace it"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    nothing = _cli("run", recipe, "--out", out, "--resume", "--quiet")
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.stderr

    both = _cli("run", recipe, "--out", out, "--resume", "--overwrite")
    assert both.exit_code == 2 and "exclude each other" in both.stderr

    replaced = _cli("run", recipe, "--out", out, "--overwrite", "--quiet")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaces squeezer's files only
    assert (out / "model.safetensors").exists()

    again = _cli("run", recipe, "--out", out, "--quiet")  # a finished run is not replaced either
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_cli_output_path_that_is_a_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    target = tmp_path / "out"
    target.write_text("not a directory")
    result = _cli("run", recipe, "--out", target, "--quiet")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and str(target) in result.stderr
    assert target.read_text() == "not a directory"
