"""One model rebuild (pipeline/rebuild.py): the architecture at any stage is derived from the
recipe, and every consumer (resume, export, eval, load) builds the same model."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import squeezer
from squeezer.cli import app
from squeezer.pipeline.events import EpochEnded
from squeezer.pipeline.loop import Interrupted
from squeezer.pipeline.rebuild import factory_at, final_factory
from squeezer.recipe import parse_recipe

DIGITS = """
seed = 1
[model]
factory = "squeezer.examples.digits:make_model"
width = 4
[data]
factory = "squeezer.examples.digits:make_loaders"
batch_size = 256
[[stages]]
type = "train"
epochs = 1
"""
# a distill stage whose student is narrower than the teacher: the architecture changes mid-run
DISTILL = DIGITS + """
[[stages]]
type = "distill"
epochs = 2
student = { factory = "squeezer.examples.digits:make_model", options = { width = 2 } }
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
epochs_per_round = 1
"""


def test_factory_at_follows_the_distill_students() -> None:
    recipe = parse_recipe(DISTILL)
    teacher, student = recipe.model, recipe.stages[1].student  # type: ignore[attr-defined]
    assert factory_at(recipe, 0) == (teacher, "model")
    assert factory_at(recipe, 1) == (teacher, "model")  # before the distill stage starts
    assert factory_at(recipe, 1, started=True) == (student, "stages[1].student")
    assert factory_at(recipe, 2) == (student, "stages[1].student")
    assert final_factory(recipe) == (student, "stages[1].student")


def _stop_at(stage: int, epoch: int) -> Any:
    def sink(event: Any) -> None:
        if isinstance(event, EpochEnded) and (event.stage, event.epoch) == (stage, epoch):
            os.kill(os.getpid(), signal.SIGINT)

    return sink


def test_resume_inside_a_distill_stage_with_another_student(tmp_path: Path) -> None:
    """The checkpoint in the middle of the distill stage holds the narrower student; resuming
    used to build the recipe's [model] (the teacher's architecture) and fail to load it."""
    recipe = parse_recipe(DISTILL)
    whole = squeezer.run(recipe, out=tmp_path / "whole")
    with pytest.raises(Interrupted):
        squeezer.run(recipe, out=tmp_path / "cut", sink=_stop_at(1, 0))
    resumed = squeezer.run(recipe, out=tmp_path / "cut", resume=True)
    a = squeezer.load(whole.artifact).state_dict()
    b = squeezer.load(resumed.artifact).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_export_keeps_the_model_options(tmp_path: Path) -> None:
    """``squeezer export`` used to drop ``model_options``: an artifact exported from a run whose
    [model] has options (width = 4) then failed ``squeezer.load(path)`` with a shape mismatch."""
    run = squeezer.run(parse_recipe(DIGITS + """
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
epochs_per_round = 1
"""), out=tmp_path / "run")
    exported = tmp_path / "exported.safetensors"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    fresh = squeezer.load(exported)  # squeezer.examples is trusted: the recorded factory builds it
    expected = squeezer.load(run.artifact)
    for (name, a), (_, b) in zip(fresh.state_dict().items(), expected.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_spec_naming_a_missing_weight_is_one_error(tmp_path: Path) -> None:
    """A crafted checkpoint (checksum recomputed) whose compression spec names a parameter the
    model lacks: one line from export, not a raw AttributeError."""
    from squeezer.pipeline import checkpoint

    squeezer.run(parse_recipe(DIGITS + """
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
epochs_per_round = 1
"""), out=tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.safetensors"
    tensors, meta = checkpoint.load(ckpt)
    meta["spec"]["weights"] = [*meta["spec"]["weights"], "99.weight"]
    checkpoint.save(ckpt, tensors, meta)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "a.safetensors")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: ") and "spec does not fit" in result.stderr
    assert "Traceback" not in result.output
