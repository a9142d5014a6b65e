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


DISTILL_RECIPE = ACTS_RECIPE[: ACTS_RECIPE.index('type = "mutual"')] + 'type = "distill"\nepochs = 2\n'


@pytest.mark.parametrize(
    ("text", "nth"),
    [
        (ACTS_RECIPE, 3),  # mid Phase 1, between rounds
        (ACTS_RECIPE, 5),  # mid Phase 2, after the warm-up
        # The distill stage's teacher is the activation-quantized model the prune stage left; on
        # resume it is rebuilt from the model's factory, so its input quantizers must come back too.
        (DISTILL_RECIPE, 5),  # after distill's first epoch
    ],
    ids=["phase1", "mutual", "distill"],
)
def test_resume_with_activation_quantizers_is_exact(tmp_path: Path, text: str, nth: int) -> None:
    assert "activations" in text
    recipe = parse_recipe(text)
    full = run(recipe, out=tmp_path / "full")
    with pytest.raises(Crash):
        run(recipe, out=tmp_path / "cut", sink=_crash_at(Checkpointed, nth))
    resumed = run(recipe, out=tmp_path / "cut", resume=True)
    artifact = "model.safetensors"
    assert (tmp_path / "cut" / artifact).read_bytes() == (tmp_path / "full" / artifact).read_bytes()
    assert resumed.accuracy == full.accuracy
