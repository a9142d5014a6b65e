"""Every bundled recipe runs end to end on its own example (with a small budget)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch

import squeezer
from squeezer import compress
from squeezer.examples.digits import make_model
from squeezer.factories import call_factory
from squeezer.pipeline import DEFAULT_RECIPE, run
from squeezer.pipeline.training import evaluate
from squeezer.recipe import PruneStage, Recipe, load_recipe

RECIPES = sorted(DEFAULT_RECIPE.parent.glob("*.toml"))


def _small(recipe: Recipe) -> Recipe:
    """The same recipe with one epoch per stage (round) and a narrower model: the pipeline, not accuracy."""
    stages = []
    for stage in recipe.stages:
        if isinstance(stage, PruneStage):
            stages.append(attrs.evolve(stage, epochs_per_round=1))
        else:
            kwargs = {"epochs": min(stage.epochs, 1)}
            if hasattr(stage, "warmup_epochs"):
                kwargs["warmup_epochs"] = 1
            stages.append(attrs.evolve(stage, **kwargs))
    model = attrs.evolve(recipe.model, options={**recipe.model.options, "width": 4})
    data = attrs.evolve(recipe.data, options={**recipe.data.options, "batch_size": 128})
    return attrs.evolve(recipe, stages=tuple(stages), model=model, data=data)


def test_the_bundled_recipes_are_shipped_in_the_package() -> None:
    assert {p.name for p in RECIPES} >= {"pqk.toml", "prune.toml", "qat.toml", "kd.toml"}
    assert Path("recipes").resolve() == DEFAULT_RECIPE.parent.resolve() or not Path("recipes").exists()


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_end_to_end(path: Path, tmp_path: Path) -> None:
    recipe = _small(load_recipe(path, squeezer.load_registry()))
    result = run(recipe, out=tmp_path)
    assert result.artifact == tmp_path / "model.safetensors" and result.artifact.exists()
    assert 0.0 <= result.accuracy <= 1.0
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()
    model = squeezer.load(result.artifact)  # built by the factory (and options) the artifact records
    _, accuracy = evaluate(model, call_factory(recipe.data, "data")[1], torch.device("cpu"))
    assert accuracy == pytest.approx(result.accuracy, abs=1e-9)


def test_pqk_recipe_reaches_its_targets(tmp_path: Path) -> None:
    recipe = _small(load_recipe(DEFAULT_RECIPE))
    prune_stage = next(s for s in recipe.stages if isinstance(s, PruneStage))
    target = prune_stage.scheduler.options["target"]
    result = run(recipe, out=tmp_path)
    total = sum(layer[1] for layer in result.layers)
    assert round(result.sparsity * total) == round(target * total)  # exactly the scheduled count
    bits = {layer[3] for layer in result.layers}
    assert bits == {4, 8}  # 4-bit body, first layer overridden to 8 bits
    assert result.layers[0][3] == 8
    assert result.dense_accuracy is not None
    report = squeezer.inspect(result.artifact)
    assert report.ratio < 1.1  # payload within 10% of the information bound
    # the deployable student: pruned entries are exactly zero in the reloaded plain model
    plain = squeezer.load(result.artifact, make_model(width=4))
    for name, nnz in ((layer[0], layer[2]) for layer in result.layers):
        weight = plain.get_parameter(name)
        assert int((weight != 0).sum()) <= nnz
    assert not list(compress.compressed_weights(plain))
