"""A recipe's ``task``: recorded only when it is not the default (old recipes hash as before),
replaced by ``squeezer run --task``, and checked against the registered tasks."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import squeezer
from squeezer.cli import app
from squeezer.recipe import load_recipe, with_factories
from squeezer.recipe.loader import recipe_to_dict

PQK = Path(squeezer.__file__).parent / "recipes" / "pqk.toml"


def test_the_default_task_is_not_recorded() -> None:
    recipe = load_recipe(PQK)
    assert recipe.task.name == "classification" and "task" not in recipe_to_dict(recipe)
    lm = with_factories(recipe, task="language_model")
    assert recipe_to_dict(lm)["task"] == {"name": "language_model", "options": {}}


def test_squeezer_run_task_names_an_unknown_task_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--task", "lm", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "task: unknown task 'lm'" in lines[0] and "language_model" in lines[0], lines
    assert not (tmp_path / "out").exists()
