"""A run with activation quantization resumed mid Phase 1 and mid Phase 2 ends with the same
artifact as the uninterrupted run: checkpoints rebuild the activation quantizers from their state."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.pipeline.test_resume import RECIPE, Crash, _crash_at

from squeezer.pipeline import run
from squeezer.pipeline.events import Checkpointed
from squeezer.recipe import parse_recipe

pytest.importorskip("squeezer_lsq")

ACTS_RECIPE = RECIPE.replace(
    'quantizer = { name = "lsq", bits = 4 }\n',
    'quantizer = { name = "lsq", bits = 8 }\nactivations = { bits = 8, calibration_batches = 2 }\n',
)


@pytest.mark.parametrize("nth", [3, 5])  # mid Phase 1 (between rounds), mid Phase 2 (after the warm-up)
def test_resume_with_activation_quantizers_is_exact(tmp_path: Path, nth: int) -> None:
    assert "activations" in ACTS_RECIPE
    recipe = parse_recipe(ACTS_RECIPE)
    full = run(recipe, out=tmp_path / "full")
    with pytest.raises(Crash):
        run(recipe, out=tmp_path / "cut", sink=_crash_at(Checkpointed, nth))
    resumed = run(recipe, out=tmp_path / "cut", resume=True)
    artifact = "model.safetensors"
    assert (tmp_path / "cut" / artifact).read_bytes() == (tmp_path / "full" / artifact).read_bytes()
    assert resumed.accuracy == full.accuracy


DISTILL_RECIPE = ACTS_RECIPE[: ACTS_RECIPE.index('type = "mutual"')] + 'type = "distill"\nepochs = 2\n'


def test_resume_inside_distill_keeps_the_teachers_activation_quantizers(tmp_path: Path) -> None:
    # The distill stage's teacher is the activation-quantized model the prune stage left; on
    # resume it is rebuilt from the model's factory, so its input quantizers must come back too.
    recipe = parse_recipe(DISTILL_RECIPE)
    full = run(recipe, out=tmp_path / "full")
    with pytest.raises(Crash):
        run(recipe, out=tmp_path / "cut", sink=_crash_at(Checkpointed, 5))  # after distill's first epoch
    resumed = run(recipe, out=tmp_path / "cut", resume=True)
    artifact = "model.safetensors"
    assert (tmp_path / "cut" / artifact).read_bytes() == (tmp_path / "full" / artifact).read_bytes()
    assert resumed.accuracy == full.accuracy
