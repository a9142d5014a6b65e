"""Hostile models through ``squeezer.run`` and ``squeezer run``: one clear error, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import squeezer
from squeezer import ConfigError, SqueezerError, TargetError
from squeezer.cli import app
from squeezer.recipe import parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipes name factories as helpers:<name>

PRUNE = 'type = "prune"\nscheduler = { name = "one_shot", target = 0.5 }\nepochs_per_round = 1'
QUANTIZE = 'type = "quantize"\nquantizer = { name = "lsq", bits = 4 }'


def recipe_text(model: str, *, options: str = "", targets: str = "", stage: str = PRUNE) -> str:
    return (f'[model]\nfactory = "helpers:{model}"\n{options}\n[data]\nfactory = "helpers:loaders"\n'
            f"{targets}\n[[stages]]\n{stage}\n")


CASES: dict[str, tuple[dict[str, str], type[SqueezerError], tuple[str, ...]]] = {
    "no prunable layer": (dict(model="no_prunable"), TargetError,
                          ("targets matched no parameter",
                           "types=['Linear', 'Conv1d', 'Conv2d', 'Conv3d', 'RNNBase', 'RNNCellBase', "
                           "'MultiheadAttention', 'Conv1D']")),
    "targets match nothing": (dict(model="tiny", targets='[targets]\ninclude = ["encoder.*", "head"]'),
                              TargetError, ("matched no parameter", "include=['encoder.*', 'head']")),
    "everything excluded": (dict(model="tiny", targets='[targets]\nexclude = ["*"]'), TargetError,
                            ("matched no parameter", "exclude=['*']")),
    "unknown module type": (dict(model="tiny", targets='[targets]\ntypes = ["Lineer"]'), TargetError,
                            ("types=['Lineer']",)),
    # a weight tied to an excluded path is left uncompressed (named); targets matching only it match nothing
    "tied to an excluded weight": (dict(model="tied", targets='[targets]\ninclude = ["1"]\nexclude = ["3"]'),
                                   TargetError, ("matched no parameter", "1: weight is tied to 3.weight",
                                                 "excluded")),
    "tied to an excluded weight, quantize only": (
        dict(model="tied", stage=QUANTIZE, targets='[targets]\ninclude = ["1"]\nexclude = ["3"]'),
        TargetError, ("matched no parameter", "tied to 3.weight")),
    "integer parameter by glob": (dict(model="int_param", targets='[targets]\nparameters = ["*.codes"]'),
                                  TargetError, ("fc.codes", "floating-point", "int64")),
    "NaN weight": (dict(model="bad_weight", options='value = "nan"'), TargetError, ("3.weight", "NaN or Inf")),
    "+inf weight": (dict(model="bad_weight", options='value = "inf"\nlayer = 1'), TargetError,
                    ("1.weight", "NaN or Inf")),
    "-inf weight": (dict(model="bad_weight", options='value = "-inf"'), TargetError, ("3.weight", "NaN or Inf")),
    "NaN weight, quantize only": (dict(model="bad_weight", options='value = "nan"', stage=QUANTIZE), TargetError,
                                  ("3.weight", "NaN or Inf", "quantize")),
    "factory returns no module": (dict(model="not_a_module"), ConfigError, ("model.factory", "str")),
    "factory rejects options": (dict(model="tiny", options="depth = 3"), ConfigError,
                                ("helpers:tiny", "rejected its options")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_model_is_one_clear_error_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    kwargs, error, needles = CASES[case]
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        squeezer.run(parse_recipe(recipe_text(**kwargs)), out=out)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def _cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("case", ["no prunable layer", "tied to an excluded weight", "NaN weight",
                                  "integer parameter by glob"])
def test_bad_model_through_the_cli(tmp_path: Path, case: str) -> None:
    """Found while the run is under way (after the model was built): exit 1, one line, no files."""
    kwargs, _, needles = CASES[case]
    path = tmp_path / "r.toml"
    path.write_text(recipe_text(**kwargs), encoding="utf-8")
    result = _cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_tied_weights_are_compressed_once_and_named(tmp_path: Path) -> None:
    notes: list[str] = []
    result = squeezer.run(parse_recipe(recipe_text(model="tied")), out=tmp_path / "out",
                          sink=lambda e: notes.append(getattr(e, "text", "")))
    assert [path for path, *_ in result.layers] == ["1.weight", "5.weight"]
    assert any("1.weight is tied to 3.weight: compressed once" in n for n in notes), notes
    assert result.artifact is not None
    import helpers

    loaded = squeezer.load(result.artifact, helpers.tied())
    assert loaded[3].weight is loaded[1].weight


def test_a_factory_that_raises_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model"):
        squeezer.run(parse_recipe(recipe_text("raises", stage='type = "train"')), out=tmp_path / "out")


def test_a_factory_that_raises_is_one_line_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(recipe_text("raises", stage='type = "train"'), encoding="utf-8")
    result = _cli("run", path, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code in (1, 2), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "factory exploded" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
