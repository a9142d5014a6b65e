"""Mistakes in the user's data and model found at the first batch or the step they break: one
SqueezerError naming the factory or field, from ``squeezer.run`` and ``squeezer run`` alike
(issue 14, item 10)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import squeezer
from squeezer import ConfigError, SqueezerError, TrainingError
from squeezer.cli import app
from squeezer.recipe import parse_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))


def recipe_text(data: str = "helpers:loaders", model: str = "helpers:tiny", device: str = "cpu") -> str:
    return (f'device = "{device}"\n[model]\nfactory = "{model}"\n[data]\nfactory = "{data}"\n'
            '[[stages]]\ntype = "train"\nepochs = 1\n')


CASES: dict[str, tuple[dict[str, str], type[SqueezerError], tuple[str, ...]]] = {
    "float targets": (dict(data="bad_data:float_targets"), ConfigError,
                      ("data.factory: 'bad_data:float_targets'", "integer class indices", "float32")),
    "targets out of range": (dict(data="bad_data:targets_out_of_range"), ConfigError,
                             ("data.factory", "must lie in 0..9", "10..")),
    "a bad target in a later batch": (dict(data="bad_data:late_bad_target"), TrainingError,
                                      ("stages[0]", "step 3", "bad_data:late_bad_target")),
    "bad validation targets": (dict(data="bad_data:bad_validation_targets"), TrainingError,
                               ("evaluation batch 1", "validation loader of data.factory")),
    "datasets instead of loaders": (dict(data="bad_data:datasets"), ConfigError,
                                    ("data.factory", "TensorDataset", "DataLoader(dataset, batch_size=")),
    "generators instead of loaders": (dict(data="bad_data:generators"), ConfigError,
                                      ("data.factory", "re-iterable", "generator")),
    "batches without targets": (dict(data="bad_data:inputs_only"), ConfigError,
                                ("data.factory: 'bad_data:inputs_only'", "(inputs, targets)")),
    "inputs of the wrong shape": (dict(data="bad_data:wrong_input_shape"), ConfigError,
                                  ("model.factory: 'helpers:tiny' failed on the first batch", "RuntimeError")),
    "one loader, not two": (dict(data="bad_data:one_loader"), ConfigError,
                            ("data.factory", "(train_loader, val_loader)", "DataLoader")),
    "fewer logits than classes": (dict(model="bad_data:few_logits"), ConfigError,
                                  ("data.factory", "0..3", "4 logits")),
    "logits without a class axis": (dict(model="bad_data:flat_logits"), ConfigError,
                                    ("model.factory: 'bad_data:flat_logits'", "(batch, classes)")),
    "the meta device": (dict(device="meta"), ConfigError, ("device: 'meta'",)),
    "an unknown device": (dict(device="tpu9"), ConfigError, ("device",)),
}
if not torch.cuda.is_available():
    CASES["cuda without a GPU"] = (dict(device="cuda"), ConfigError, ("device: 'cuda'", "not usable"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_clear_error(tmp_path: Path, case: str) -> None:
    kwargs, error, needles = CASES[case]
    with pytest.raises(error) as info:
        squeezer.run(parse_recipe(recipe_text(**kwargs)), out=tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("case", ["float targets", "a bad target in a later batch", "cuda without a GPU"])
def test_bad_data_through_the_cli(tmp_path: Path, case: str) -> None:
    if case not in CASES:
        pytest.skip("this machine has a GPU")
    kwargs, _, needles = CASES[case]
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_text(**kwargs))
    result: Any = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code in (1, 2), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.output
    assert needles[0] in lines[0]
