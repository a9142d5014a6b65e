"""The whole artifact, header included, stays within 10% of its information bound (issue 17,
item 4): the bundled digits CNN compressed as the default recipe compresses it (LAMP to 95%
sparsity, LSQ 4 bits, 8 on the first layer), its recipe recorded as ``squeezer run`` records it.

Train-free: the masks and quantizers are set directly (five pruning rounds, no training loop),
so the test takes about a second; the trained run's figures are in benchmarks/results/ARTIFACT_SIZE.md.
"""

from __future__ import annotations

from pathlib import Path

import torch

from squeezer.artifact import export, inspect, load
from squeezer.examples import digits
from squeezer.pipeline import DEFAULT_RECIPE
from squeezer.pipeline.rebuild import artifact_info
from squeezer.recipe import load_recipe
from squeezer.recipe.configs import PruneStage
from squeezer.registry import Registry
from squeezer.session import Compression

#: the goal of issue 17: file bytes / information bound
GOAL = 1.10


def _default_student(registry: Registry) -> tuple[torch.nn.Module, dict[str, object]]:
    recipe = load_recipe(DEFAULT_RECIPE)
    prune = next(stage for stage in recipe.stages if isinstance(stage, PruneStage))
    torch.manual_seed(0)
    model = digits.make_model()
    comp = Compression(model, importance=(prune.importance.name, dict(prune.importance.options)),
                       schedule=(prune.scheduler.name, dict(prune.scheduler.options)), quantizer=prune.quantizer,
                       min_density=prune.min_density, prune_every=0, registry=registry)
    while not comp.done:
        comp.prune_round()
    model.train()
    with torch.no_grad():
        for _ in range(3):  # batch-norm statistics worth storing
            model(torch.randn(64, 1, 8, 8))
    return model.eval(), artifact_info(recipe)


def test_the_default_students_artifact_is_within_10_percent_of_its_bound(squeezer_registry: Registry,
                                                                          tmp_path: Path) -> None:
    model, info = _default_student(squeezer_registry)
    path = tmp_path / "model.safetensors"
    report = export(model, path, info=info)
    assert 0.94 < 1 - report.nnz / sum(layer.numel for layer in report.layers) < 0.96
    assert [layer.bits for layer in report.layers] == [8, 4, 4, 4, 4]
    assert report.file_bytes == path.stat().st_size
    assert report.file_ratio <= GOAL, report.summary()
    assert report.header_bytes < 0.08 * report.bound_bytes  # the record and the safetensors table
    assert inspect(path).info == info  # the recipe is in the file, not a sidecar
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load(path, digits.make_model())(x), model(x))
