"""Recipes: TOML -> frozen configs; every error names the file and the field path."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

import squeezer
from squeezer import ConfigError, UnknownStrategyError
from squeezer.recipe import (
    MutualStage,
    PruneStage,
    load_recipe,
    parse_recipe,
    recipe_from_dict,
    recipe_to_dict,
)

BASE = """
[model]
factory = "squeezer.examples.digits:make_model"
width = 8
[data]
factory = "squeezer.examples.digits:make_loaders"
[training]
optimizer = "sgd"
lr = 0.1
"""


@pytest.fixture(scope="module")
def registry() -> squeezer.Registry:
    return squeezer.load_registry(autoload=False)


def _parse(stages: str, registry: squeezer.Registry | None = None) -> squeezer.Recipe:
    return parse_recipe(BASE + stages, source="r.toml", registry=registry)


def test_a_full_recipe_parses_into_frozen_configs(registry: squeezer.Registry) -> None:
    recipe = _parse(
        """
[[stages]]
type = "prune"
importance = "l2"
scheduler = { name = "cubic", target = 0.9, rounds = 3 }
quantizer = { name = "lsq", bits = 2, overrides = [{ pattern = "@first", bits = 8 }, { pattern = "fc*", skip = true }] }
lr = 0.01
[[stages]]
type = "mutual"
distillation = { name = "hinton", temperature = 2.0 }
teacher_owns = ["norm", "bias"]
""",
        registry,
    )
    prune, mutual = recipe.stages
    assert isinstance(prune, PruneStage) and isinstance(mutual, MutualStage)
    assert prune.importance.name == "l2" and prune.scheduler.options == {"target": 0.9, "rounds": 3}
    assert prune.quantizer is not None and prune.quantizer.options == {"bits": 2}
    assert prune.quantizer.overrides[0].options == {"bits": 8} and prune.quantizer.overrides[1].skip
    # a stage's optimizer settings override [training] field by field
    assert prune.optim is not None and prune.optim.optimizer == "sgd" and prune.optim.lr == 0.01
    assert recipe.model.options == {"width": 8}
    assert mutual.teacher_owns == ("norm", "bias")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        recipe.seed = 1  # type: ignore[misc]


def test_round_trip_through_plain_data() -> None:
    recipe = _parse('[[stages]]\ntype = "train"\nepochs = 2\n')
    again = recipe_from_dict(recipe_to_dict(recipe))
    assert recipe_to_dict(again) == recipe_to_dict(recipe)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ('[[stages]]\ntype = "train"\nepochs = -1', r"r\.toml: stages\[0\]\.epochs: must be >= 0"),
        ('[[stages]]\ntype = "train"\nepochs = "3"', r"r\.toml: stages\[0\]\.epochs: must be an integer"),
        ('[[stages]]\ntype = "trian"', r"stages\[0\]\.type: unknown stage type 'trian'; did you mean 'train'"),
        ("[[stages]]\nepochs = 1", r"stages\[0\]\.type: missing 'type'"),
        ('[[stages]]\ntype = "train"\nepoch = 1', r"stages\[0\]\.epoch: unknown field; did you mean 'epochs'"),
        ('[[stages]]\ntype = "prune"', r"stages\[0\]\.scheduler: required field is missing"),
        ('[[stages]]\ntype = "mutual"\nteacher_owns = ["weights"]', r"stages\[0\]\.teacher_owns: must be in"),
        ('[[stages]]\ntype = "train"\nlr = -1.0', r"stages\[0\]\.optim\.lr: must be > 0"),
        ("", r"r\.toml: stages: required field is missing"),
        ("stages = []", r"r\.toml: training\.stages: unknown field"),  # TOML: the key belongs to [training]
    ],
)
def test_schema_errors_name_the_field(stages: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(stages)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ('[[stages]]\ntype = "prune"\nscheduler = { name = "geometrc", target = 0.5 }',
         r"unknown scheduler 'geometrc'; did you mean 'geometric'\? \(valid: cubic, geometric, one_shot\)"),
        ('[[stages]]\ntype = "prune"\nscheduler = { name = "one_shot", target = 1.5 }',
         r"r\.toml: stages\[0\]\.scheduler: scheduler 'one_shot': 'target' must be <= 1"),
        ('[[stages]]\ntype = "quantize"\nquantizer = { name = "lsq", bits = 1 }',
         r"stages\[0\]\.quantizer: .*bits must be in 2\.\.8, got 1"),
        ('[[stages]]\ntype = "quantize"\nquantizer = { name = "lsq", bitz = 4 }',
         r"stages\[0\]\.quantizer: unknown option 'bitz' for quantizer 'lsq'"),
        ('[[stages]]\ntype = "mutual"\ndistillation = { name = "hinton", temperature = 0 }',
         r"stages\[0\]\.distillation: .*temperature"),
    ],
)
def test_plugin_errors_name_the_field_and_the_valid_choices(
    stages: str, message: str, registry: squeezer.Registry
) -> None:
    with pytest.raises((ConfigError, UnknownStrategyError), match=message):
        _parse(stages, registry)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.toml")


def test_bad_factory_path_is_named() -> None:
    with pytest.raises(ConfigError, match=r"<recipe>: model\.factory: expected 'module:function'"):
        parse_recipe('[model]\nfactory = "not a path"\n[data]\nfactory = "a:b"\n[[stages]]\ntype = "train"')


@pytest.mark.parametrize(("text", "message"), [
    ('stages = 3\n' + BASE, r"stages: must be an array"),
    ('stages = []\n' + BASE, r"stages: needs at least one stage"),
])
def test_stage_list_shape(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_recipe(text)
