"""A fixed parameter set from ``Compression.attach()`` on: quantizers are attached pending and the
first pruning round switches them on, initialized in place from the pruned weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from torch import nn

import squeezer
from squeezer import compress
from squeezer.artifact.reader import read
from squeezer.compress.weight import compressed_weights
from squeezer.errors import PluginError
from squeezer.registry import Registry
from squeezer.session import Compression


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def _comp(model: nn.Module, registry: Registry, **kwargs: Any) -> Compression:
    return Compression(model, importance="l1", schedule=("geometric", {"target": 0.75, "rounds": 2}),
                       quantizer=("lsq", {"bits": 4}), prune_every=1, min_density=0.0, registry=registry,
                       **kwargs)


def test_attach_creates_every_trained_parameter_before_the_optimizer(registry: Registry) -> None:
    model = _model()
    x = torch.randn(8, 12)
    with torch.no_grad():
        dense = model(x)
    comp = _comp(model, registry)
    comp.attach()
    params = [p for _, p in model.named_parameters()]
    pending = [p for _, w in compressed_weights(model) for p in w.fake_quantizer.parameters()]  # type: ignore[union-attr]
    assert len(pending) == 2 and all(any(p is q for q in params) for p in pending)
    assert comp.bits == {} and compress.spec(model)["quantizers"] == {}  # pending: not quantized yet
    # a pending quantizer leaves the weight as it is, and its parameters get an exact zero gradient
    out = model(x)
    assert torch.equal(out.detach(), dense)
    out.sum().backward()
    assert all(p.grad is not None and bool((p.grad == 0).all()) for p in pending)

    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
    optimizer.step()  # zero gradients: Adam state (a step count) for the pending parameters
    groups_before = len(optimizer.param_groups)
    comp.prune_round(optimizer)
    after = [p for _, p in model.named_parameters()]
    assert len(after) == len(params) and all(a is b for a, b in zip(after, params, strict=True))
    assert all(p not in optimizer.state for p in pending), "state left by zero gradients is forgotten"
    # nothing joined: one group moved (the stored weights and the steps lose weight decay)
    assert len(optimizer.param_groups) == groups_before + 1
    no_decay = optimizer.param_groups[-1]
    assert no_decay["weight_decay"] == 0.0
    assert {id(p) for p in pending} <= {id(p) for p in no_decay["params"]}
    assert set(comp.bits.values()) == {4}


def test_the_first_round_initializes_the_quantizers_from_the_pruned_weights(registry: Registry) -> None:
    model = _model()
    comp = _comp(model, registry)
    comp.attach()
    comp.prune_round()
    for path, w in compressed_weights(model):
        assert w.quantizer is not None and w.quantizer is w.fake_quantizer
        pruned = torch.where(w.mask, compress.original(model, path).detach(), torch.zeros(()))
        fresh = w.quantizer_config.build(pruned)
        assert torch.equal(w.quantizer.step, fresh.step)  # as if built from the pruned weight


def test_export_before_the_first_round_is_unquantized(registry: Registry, tmp_path: Path) -> None:
    model = _model()
    comp = _comp(model, registry)
    comp.attach()
    comp.export(tmp_path / "dense.safetensors")
    layers = read(tmp_path / "dense.safetensors").meta["layers"]
    assert layers and all(layer["encoding"] == "float" and layer["quantizer"] is None for layer in layers)


def test_a_quantizer_whose_state_depends_on_the_values_is_refused(registry: Registry) -> None:
    @attrs.frozen
    class Shapeshifter:
        def build(self, w: torch.Tensor) -> nn.Module:
            class Q(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.levels = nn.Parameter(torch.zeros(int((w != 0).sum())))

                def forward(self, v: torch.Tensor) -> torch.Tensor:
                    return v + 0 * self.levels.sum()

            return Q()

    local = Registry()
    local.add_importance("l1", type(registry.create("importance", "l1", {})))
    local.add_scheduler("geometric", type(registry.create("scheduler", "geometric", {"target": 0.75, "rounds": 2})))
    local.add_quantizer("shifty", Shapeshifter)
    local.add_distillation_loss("hinton", type(registry.create("distillation_loss", "hinton", {})))
    model = _model()
    comp = Compression(model, importance="l1", schedule=("geometric", {"target": 0.75, "rounds": 2}),
                       quantizer="shifty", prune_every=1, min_density=0.0, registry=local)
    comp.attach()
    with pytest.raises(PluginError, match=r"quantizer 'shifty'.*same shapes whatever the weight's values"):
        comp.prune_round()
