"""``squeezer run --model/--data``: a recipe (the bundled one by default) on the user's own factories."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from squeezer.artifact.reader import read
from squeezer.cli import app
from squeezer.cli.launch import resume_command
from squeezer.pipeline.runner import DEFAULT_RECIPE
from squeezer.recipe import load_recipe, with_factories

RECIPE = """\
[model]
factory = "squeezer.examples.digits:make_model"
width = 8
[data]
factory = "squeezer.examples.digits:make_loaders"
batch_size = 128
[[stages]]
type = "train"
epochs = 1
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
epochs_per_round = 1
"""


def _invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_the_factories_replace_the_recipes_and_drop_their_options() -> None:
    recipe = with_factories(load_recipe(DEFAULT_RECIPE), model="mine:net", data="mine:loaders")
    assert (recipe.model.factory, recipe.model.options) == ("mine:net", {})
    assert (recipe.data.factory, recipe.data.options) == ("mine:loaders", {})
    assert recipe.stages == load_recipe(DEFAULT_RECIPE).stages


def test_run_uses_the_users_model_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r.toml").write_text(RECIPE, encoding="utf-8")
    (tmp_path / "mine.py").write_text(textwrap.dedent("""\
        from squeezer.examples import digits

        def small():
            return digits.make_model(width=4)
        """), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = _invoke("run", "r.toml", "--model", "mine:small", "--out", "out", "--json")
    assert result.exit_code == 0, result.output
    meta = read(tmp_path / "out" / "model.safetensors").meta
    assert json.dumps(meta["info"]).count("mine:small") >= 1
    assert json.loads(result.stdout)["accuracy"] > 0.1


def test_a_malformed_factory_is_one_line_naming_the_option(tmp_path: Path) -> None:
    result = _invoke("run", "--model", "no colon", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model: expected 'module:function'"), result.stderr
    assert not (tmp_path / "o").exists()


def test_the_resume_hint_repeats_the_factories() -> None:
    hint = resume_command(None, Path("o"), None, 2, None, True, ("--model", "mine:small"))
    assert hint == "interrupted; resume with: squeezer run --model mine:small --out o --nproc 2 --resume"
