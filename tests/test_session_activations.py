"""``Compression(activations=...)``: your own loop quantizes the compressed layers' inputs as a recipe does."""

from __future__ import annotations

import pytest
import torch

from squeezer.engine.activations import activation_quantizers
from squeezer.errors import ConfigError
from squeezer.examples.digits import make_model
from squeezer.registry import Registry
from squeezer.session import Compression


def test_attach_calibrates_activation_quantizers_and_they_train(squeezer_registry: Registry) -> None:
    torch.manual_seed(0)
    model = make_model(width=4)
    comp = Compression(model, quantizer=("lsq", {"bits": 8}), activations=8, prune_every=0,
                       registry=squeezer_registry)
    inputs = [torch.rand(16, 1, 8, 8) for _ in range(6)]
    comp.attach(calibration=inputs)
    quantizers = activation_quantizers(model)
    assert sorted(quantizers, key=int) == ["0", "3", "7", "12", "14"]
    assert all(bool(q.initialized) and not q.signed for q in quantizers.values())
    comp.attach(calibration=inputs)  # idempotent
    assert activation_quantizers(model) == quantizers
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    comp.prune_due(optimizer)
    before = float(quantizers["3"].current_step().detach())
    model(inputs[0]).square().mean().backward()
    optimizer.step()
    assert float(quantizers["3"].current_step().detach()) != before


def test_activations_need_calibration_inputs_and_valid_bits(squeezer_registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"activations: must be bits in 2\.\.8"):
        Compression(make_model(width=4), activations=12, registry=squeezer_registry)
    comp = Compression(make_model(width=4), activations=8, registry=squeezer_registry)
    with pytest.raises(ConfigError, match=r"attach\(calibration=\.\.\.\) needs a few training inputs"):
        comp.attach()
