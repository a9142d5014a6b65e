"""The built-in strategies on nn.TransformerEncoder, whose attention input projection is the raw
parameter ``in_proj_weight``: targeting, masks, LSQ, the PQK self-teacher, export, and the recipe.

In eval mode under ``no_grad`` ``nn.TransformerEncoderLayer`` takes its fast path
(``torch._transformer_encoder_layer_fwd``), which reads the weights as attributes; these tests
check that it sees the compressed weights (student or teacher view), not the stored originals.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from torch import nn

import squeezer
from squeezer import compress
from squeezer.compress import Targets
from squeezer.compress.teacher import SelfTeacher
from squeezer.examples.transformer import make_loaders, make_model
from squeezer.pipeline import run
from squeezer.pipeline.training import evaluate
from squeezer.recipe import MutualStage, PruneStage, Recipe, Stage, load_recipe

RECIPE = Path(squeezer.__file__).parent / "recipes" / "transformer_pqk.toml"
TARGETS = Targets(types=("Linear",), parameters=("*.in_proj_weight",))
IN_PROJ = [f"encoder.layers.{i}.self_attn.in_proj_weight" for i in range(2)]
REGISTRY = squeezer.load_registry()


def l1(_path: str, w: torch.Tensor) -> torch.Tensor:
    return w.abs()


def in_proj(model: nn.Module, path: str) -> torch.Tensor:
    """The in_proj_weight the attention module sees (through its parametrization, if any)."""
    weight = model.get_submodule(path.rpartition(".")[0]).in_proj_weight
    assert isinstance(weight, torch.Tensor)
    return weight


def original_grad(model: nn.Module, path: str) -> torch.Tensor:
    grad = compress.original(model, path).grad
    assert grad is not None
    return grad


def batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(seed))


def compressed(sparsity: float = 0.7, bits: int = 4) -> nn.Module:
    """The example transformer with masks on every target and 4-bit LSQ, pruned globally."""
    torch.manual_seed(0)
    model = make_model()
    compress.attach(model, TARGETS)
    compress.prune(model, l1, sparsity, min_density=0.02)
    config = REGISTRY.create("quantizer", "lsq", {"bits": bits})
    compress.attach_quantizers(model, lambda _path: ("lsq", config))
    return model


@pytest.fixture
def fast_path_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """Records the in_proj weight of every call of the encoder layer's fused fast path."""
    calls: list[torch.Tensor] = []
    real = torch._transformer_encoder_layer_fwd

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(args[3].detach().clone())  # (src, embed_dim, num_heads, in_proj_weight, ...)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    yield calls


def test_targets_find_every_in_proj_weight_and_the_linear_layers() -> None:
    model = make_model()
    resolution = compress.resolve(model, TARGETS)
    assert set(IN_PROJ) <= set(resolution.targets)
    # out_proj is a NonDynamicallyQuantizableLinear: matched by its base class Linear
    assert {f"encoder.layers.{i}.self_attn.out_proj.weight" for i in range(2)} <= set(resolution.targets)
    assert {"embed.weight", "head.weight"} <= set(resolution.targets)
    assert not any(t.endswith("bias") or "norm" in t for t in resolution.targets)
    only = compress.resolve(model, Targets(types=(), parameters="*.in_proj_weight"))
    assert list(only.targets) == IN_PROJ


def test_width_is_an_alias_of_d_model() -> None:
    model = make_model(width=8)
    assert model(batch(2)).shape == (2, 10)
    assert model.get_parameter(IN_PROJ[0]).shape == (24, 8)
    with pytest.raises(ValueError, match="multiple"):
        make_model(d_model=6, heads=4)


def test_masks_and_lsq_apply_to_in_proj_weight() -> None:
    model = compressed()
    params = dict(compress.compressed_weights(model))
    for path in IN_PROJ:
        p = params[path]
        assert p.quantizer is not None and p.quantizer.bits == 4
        assert 0 < int(p.mask.sum()) < p.mask.numel()
        seen = in_proj(model, path)
        w = compress.original(model, path)
        assert bool((seen[~p.mask] == 0).all())
        quantizer: Any = p.quantizer
        codes, scale = quantizer.quantize(torch.where(p.mask, w, w.new_zeros(())))
        assert torch.equal(seen, torch.where(p.mask, codes * scale, seen.new_zeros(())))
        assert int(codes.abs().max()) <= 8
    # gradients: kept entries of the original and the step sizes, never pruned entries
    model.train()
    nn.functional.cross_entropy(model(batch()), torch.arange(16) % 10).backward()
    for path in IN_PROJ:
        p = params[path]
        grad = original_grad(model, path)
        assert bool((grad[~p.mask] == 0).all()) and bool((grad[p.mask] != 0).any())
        assert p.quantizer is not None and p.quantizer.step.grad is not None


def test_eval_fast_path_sees_the_compressed_weights(fast_path_calls: list[torch.Tensor]) -> None:
    model = compressed().eval()
    x = batch()
    with torch.no_grad():
        out = model(x)
    assert len(fast_path_calls) == 2  # both layers took the fused path...
    for seen, path in zip(fast_path_calls, IN_PROJ, strict=True):  # ...with the student's weights
        assert torch.equal(seen, in_proj(model, path))
    # the reference: the baked student (plain weights) through the ordinary, unfused path
    baked = compress.bake(copy.deepcopy(model)).train()
    with torch.no_grad():
        reference = baked(x)
    assert len(fast_path_calls) == 2
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    # and the unpruned, unquantized weights would give something else
    dense = copy.deepcopy(model)
    for _, p in compress.compressed_weights(dense):
        p.mask.fill_(True)
        p.quantizer = None
    with torch.no_grad():
        assert not torch.allclose(dense(x), out, atol=1e-3)


def test_teacher_and_student_split_in_proj_weight(fast_path_calls: list[torch.Tensor]) -> None:
    model = compressed()
    teacher = SelfTeacher(model)
    params = dict(compress.compressed_weights(model))
    x, y = batch(), torch.arange(16) % 10
    with compress.view(model, "teacher"):
        for path in IN_PROJ:
            p, w = params[path], compress.original(model, path)
            seen = in_proj(model, path)
            assert torch.equal(seen[~p.mask], w[~p.mask])  # the pruned-away (unimportant) weights
            assert p.quantizer is not None
            assert torch.equal(seen[p.mask], p.quantizer(torch.where(p.mask, w, w.new_zeros(())))[p.mask])
    model.train()
    teacher.train()
    nn.functional.cross_entropy(model(x), y).backward()
    student_grads = {path: original_grad(model, path).clone() for path in IN_PROJ}
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(teacher(x), y).backward()
    for path in IN_PROJ:
        mask = params[path].mask
        teacher_grad = original_grad(model, path)
        assert bool((student_grads[path][~mask] == 0).all()) and bool((student_grads[path][mask] != 0).any())
        assert bool((teacher_grad[mask] == 0).all()) and bool((teacher_grad[~mask] != 0).any())
    # the teacher in eval mode (fast path) computes with the teacher view of in_proj_weight
    teacher.eval()
    with torch.no_grad():
        fast = teacher(x)
    assert len(fast_path_calls) == 2
    for seen, path in zip(fast_path_calls, IN_PROJ, strict=True):
        p, w = params[path], compress.original(model, path)
        assert torch.equal(seen[~p.mask], w[~p.mask].detach())
    teacher.train()
    with torch.no_grad():
        slow = teacher(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert model.training  # the teacher leaves the student's mode to the caller


def test_export_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = compressed().eval()
    path = tmp_path / "transformer.safetensors"
    squeezer.export(model, path)
    fresh = squeezer.load(path, make_model())
    assert not list(compress.compressed_weights(fresh))
    x = batch(32, seed=1)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    for name in IN_PROJ:
        w = fresh.get_parameter(name)
        p = dict(compress.compressed_weights(model))[name]
        assert bool((w[~p.mask] == 0).all())


def _tiny(recipe: Recipe) -> Recipe:
    """One epoch per stage (and per pruning round)."""
    stages: list[Stage] = []
    for stage in recipe.stages:
        if isinstance(stage, PruneStage):
            stages.append(attrs.evolve(stage, epochs_per_round=1))
        elif isinstance(stage, MutualStage):
            stages.append(attrs.evolve(stage, epochs=1, warmup_epochs=1))
        else:
            stages.append(attrs.evolve(stage, epochs=1))
    return attrs.evolve(recipe, stages=tuple(stages))


def test_recipe_runs_end_to_end(tmp_path: Path) -> None:
    recipe = _tiny(load_recipe(RECIPE, REGISTRY))
    assert recipe.targets.parameters == ("*.in_proj_weight",)
    result = run(recipe, out=tmp_path)
    assert result.artifact is not None and result.artifact.exists()
    names = {layer[0] for layer in result.layers}
    assert set(IN_PROJ) <= names
    bits = {layer[0]: layer[3] for layer in result.layers}
    assert all(bits[name] == 4 for name in IN_PROJ)
    prune_stage = next(s for s in recipe.stages if isinstance(s, PruneStage))
    total = sum(layer[1] for layer in result.layers)
    assert round(result.sparsity * total) == round(prune_stage.scheduler.options["target"] * total)
    loaded = squeezer.load(result.artifact)  # built by the recorded factory
    _, accuracy = evaluate(loaded, make_loaders()[1], torch.device("cpu"))
    assert accuracy == pytest.approx(result.accuracy, abs=1e-9)
