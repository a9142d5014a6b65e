"""``squeezer --debug run --nproc N`` passes --debug to every rank, as ``squeezer run --debug`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from squeezer.cli import app


@pytest.mark.parametrize("args", [["--debug", "run"], ["run", "--debug"]])
def test_debug_reaches_the_ranks(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_launch(nproc: int, rank_args: list[str], **kwargs: Any) -> int:
        seen.append(rank_args)
        return 0

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr("squeezer.cli.launch.launch", fake_launch)
    result = CliRunner().invoke(app, [*args, "--nproc", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert seen and "--debug" in seen[0], seen
