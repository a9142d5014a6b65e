"""The activation quantizers' steps learn like the weights' steps: in the quantizer param group
(no weight decay, the quantizers' learning-rate scale), for every driver."""

from __future__ import annotations

import torch

from squeezer.engine import param_groups
from squeezer.engine.quantizers import quantizer_parameters
from squeezer.examples.digits import make_model
from squeezer.plugin_manager import load_registry
from squeezer.session import Compression


def test_activation_steps_are_quantizer_parameters() -> None:
    model = make_model()
    comp = Compression(model, activations=8, quantizer=("lsq", {"bits": 4}), registry=load_registry())
    comp.attach(calibration=[torch.rand(8, 1, 8, 8)])
    steps = [p for name, p in model.named_parameters() if ".input_quantizer." in f".{name}"]
    assert steps
    groups = param_groups(model, weight_decay=0.1, quantizer_lr_scale=3.0)
    quantizer_group = next(g for g in groups if g.get("lr_scale") == 3.0)
    held = {id(p) for p in quantizer_group["params"]}
    assert {id(p) for p in steps} <= held and quantizer_group["weight_decay"] == 0.0
    assert {id(p) for p in steps} <= {id(p) for p in quantizer_parameters(model)}
    others = next(g for g in groups if "weight_decay" not in g and "lr_scale" not in g)
    assert not {id(p) for p in steps} & {id(p) for p in others["params"]}
