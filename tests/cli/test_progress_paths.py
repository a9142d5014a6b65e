"""The progress header shows paths below the working directory relative to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from squeezer.cli.progress import _shown


def test_paths_below_the_working_directory_are_shown_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _shown(str(tmp_path / "runs" / "out")) == str(Path("runs") / "out")
    outside = str(tmp_path.parent / "elsewhere")
    assert _shown(outside) == outside
