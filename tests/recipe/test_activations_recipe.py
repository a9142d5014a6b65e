"""The ``activations`` field of the prune and quantize stages: its syntax and its one-line errors."""

from __future__ import annotations

import pytest

from squeezer.errors import ConfigError
from squeezer.recipe import parse_recipe
from squeezer.recipe.configs import ActivationOverride, Activations, PruneStage, QuantizeStage
from squeezer.recipe.loader import recipe_from_dict, recipe_to_dict

HEAD = """
[model]
factory = "squeezer.examples.digits:make_model"
[data]
factory = "squeezer.examples.digits:make_loaders"
"""
PRUNE = """
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
quantizer = { name = "lsq", bits = 8 }
"""


def recipe(*stage_lines: str, stages: str = PRUNE) -> str:
    return HEAD + stages + "\n".join(stage_lines) + "\n"


def test_the_table_its_defaults_overrides_and_the_shorthand() -> None:
    r = parse_recipe(recipe('activations = { bits = 4, overrides = [{ pattern = "@first", bits = 8, signed = true }, '
                            '{ pattern = "classifier*", skip = true }] }'))
    stage = r.stages[0]
    assert isinstance(stage, PruneStage)
    assert stage.activations == Activations(bits=4, overrides=(
        ActivationOverride(pattern="@first", bits=8, signed=True),
        ActivationOverride(pattern="classifier*", skip=True)))
    assert parse_recipe(recipe("activations = 8")).stages[0].activations == Activations(bits=8)
    quantize = parse_recipe(recipe("activations = { calibration_batches = 2 }", stages="""
[[stages]]
type = "quantize"
quantizer = "lsq"
"""))
    assert isinstance(quantize.stages[0], QuantizeStage)
    assert quantize.stages[0].activations == Activations(bits=8, calibration_batches=2)
    assert parse_recipe(recipe()).stages[0].activations is None


def test_the_resolved_recipe_records_activations_only_when_set() -> None:
    plain = parse_recipe(recipe())
    assert "activations" not in recipe_to_dict(plain)["stages"][0]  # recorded recipes are what they were
    with_acts = parse_recipe(recipe("activations = { bits = 6 }"))
    data = recipe_to_dict(with_acts)
    assert data["stages"][0]["activations"] == {"bits": 6, "calibration_batches": 4, "log_step": True,
                                                  "overrides": []}
    assert recipe_from_dict(data) == with_acts


@pytest.mark.parametrize(("line", "message"), [
    ("activations = { bits = 1 }", "stages[0].activations.bits: must be in 2..8, got 1"),
    ("activations = 9", "stages[0].activations.bits: must be in 2..8, got 9"),
    ("activations = { bit = 8 }", "stages[0].activations.bit: unknown field; did you mean 'bits'?"),
    ("activations = true", "stages[0].activations: must be a table, got a boolean"),
    ('activations = { log_step = "yes" }', "stages[0].activations.log_step: must be true or false"),
    ("activations = { calibration_batches = 0 }", "stages[0].activations.calibration_batches: must be >= 1: 0"),
    ('activations = { overrides = [{ pattern = "0", bits = 12 }] }',
     "stages[0].activations.overrides[0].bits: must be in 2..8, got 12"),
    ('activations = { overrides = [{ bits = 4 }] }', "stages[0].activations.overrides[0].pattern: required field"),
    ('activations = { overrides = [{ pattern = "0", signed = "yes" }] }',
     "stages[0].activations.overrides[0].signed: must be true or false"),
])
def test_errors_are_one_line_and_name_the_field(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_recipe(recipe(line), source="r.toml")
    text = str(info.value)
    assert "\n" not in text and text.startswith("r.toml: "), text
    assert message in text, text


def test_activations_are_quantized_once() -> None:
    text = HEAD + PRUNE + "activations = 8\n" + '[[stages]]\ntype = "train"\n[[stages]]\ntype = "prune"\n' \
        'scheduler = { name = "one_shot", target = 0.7 }\nactivations = 8\n'
    with pytest.raises(ConfigError) as info:
        parse_recipe(text, source="r.toml")
    assert str(info.value).startswith("r.toml: stages[2].activations: the layers' inputs are already quantized by "
                                      "stages[0] ('prune')"), str(info.value)
