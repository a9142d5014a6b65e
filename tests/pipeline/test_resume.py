"""Checkpoints and resume: an interrupted run continued with ``resume=True`` equals an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from squeezer import ConfigError, TrainingError
from squeezer.pipeline import run
from squeezer.pipeline.events import Checkpointed, StageEnded
from squeezer.recipe import parse_recipe

RECIPE = """
seed = 3
[model]
factory = "squeezer.examples.digits:make_model"
width = 4
[data]
factory = "squeezer.examples.digits:make_loaders"
batch_size = 128
[[stages]]
type = "train"
epochs = 2
[[stages]]
type = "prune"
scheduler = { name = "geometric", target = 0.8, rounds = 2 }
quantizer = { name = "lsq", bits = 4 }
epochs_per_round = 1
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""


class Crash(Exception):
    pass


def _crash_at(event_type: type, count: int):  # type: ignore[no-untyped-def]
    seen = []

    def sink(event: object) -> None:
        if isinstance(event, event_type):
            seen.append(event)
            if len(seen) == count:
                raise Crash

    return sink


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("full")
    result = run(parse_recipe(RECIPE), out=out)
    return out, result.accuracy


# Killed right after checkpoint n: 1 mid dense training, 2 after it, 3 mid Phase 1 (between pruning
# rounds), 5 mid Phase 2 (after the warm-up)
@pytest.mark.parametrize("nth", [1, 2, 3, 5])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, uninterrupted: tuple[Path, float], nth: int) -> None:
    recipe = parse_recipe(RECIPE)
    with pytest.raises(Crash):
        run(recipe, out=tmp_path, sink=_crash_at(Checkpointed, nth))
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()
    assert not (tmp_path / "model.safetensors").exists()
    result = run(recipe, out=tmp_path, resume=True)
    expected = _final_state(uninterrupted[0])
    got = _final_state(tmp_path)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert result.accuracy == uninterrupted[1]


def test_existing_output_is_never_overwritten_silently(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        run(parse_recipe(RECIPE), out=tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_resume_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        run(parse_recipe(RECIPE), out=tmp_path, resume=True)


def test_resume_refuses_a_changed_recipe(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        run(parse_recipe(RECIPE), out=tmp_path, sink=_crash_at(StageEnded, 1))
    with pytest.raises(ConfigError, match="changed"):
        run(parse_recipe(RECIPE), out=tmp_path, resume=True, seed=99)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    recipe = parse_recipe(RECIPE.replace('type = "mutual"', 'type = "mutual"\nlr = 1e30'))
    with pytest.raises(TrainingError, match=r"stages\[2\].*loss became"):
        run(recipe, out=tmp_path)
    from squeezer.pipeline import checkpoint

    _, meta = checkpoint.load(tmp_path / "checkpoints" / "last.safetensors")
    assert meta["stage"] == 2  # the good checkpoint written when Phase 1 ended


@pytest.mark.parametrize("at_step", [3, 30, 60])  # 11 steps an epoch: dense, Phase 1 round 1, Phase 2 KD
def test_ctrl_c_finishes_the_step_checkpoints_and_resume_is_exact(
    tmp_path: Path, uninterrupted: tuple[Path, float], at_step: int
) -> None:
    import os
    import signal

    from squeezer.pipeline import Interrupted
    from squeezer.pipeline.events import StepEnded

    steps = []

    def sink(event: object) -> None:
        if isinstance(event, StepEnded):
            steps.append(event)
            if len(steps) == at_step:
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered mid-run

    recipe = parse_recipe(RECIPE)
    with pytest.raises(Interrupted) as info:
        run(recipe, out=tmp_path, sink=sink)
    assert info.value.checkpoint == tmp_path / "checkpoints" / "last.safetensors"
    assert len(steps) == at_step  # the step in flight finished, no further step started
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    result = run(recipe, out=tmp_path, resume=True)
    expected, got = _final_state(uninterrupted[0]), _final_state(tmp_path)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert result.accuracy == uninterrupted[1]
