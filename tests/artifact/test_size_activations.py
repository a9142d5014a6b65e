"""The size goal holds with activation quantizers too: the default student with an LSQ step on each
compressed layer's input (the record names the modules and grids; each step is a 4-byte part,
counted in the bound as stored) stays within 10% of its information bound, and reloads exactly."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.artifact.test_size import GOAL, _default_student

from squeezer.artifact import export, inspect, load
from squeezer.artifact.reader import read
from squeezer.engine.activations import activation_quantizers, attach_activations
from squeezer.examples import digits
from squeezer.recipe.configs import Activations
from squeezer.registry import Registry


def test_the_default_student_with_8_bit_activations_stays_within_10_percent(squeezer_registry: Registry,
                                                                              tmp_path: Path) -> None:
    model, info = _default_student(squeezer_registry)
    plain = export(model, tmp_path / "plain.safetensors", info=info)
    attach_activations(model, Activations(bits=8), lambda n: (model(torch.rand(64, 1, 8, 8)) for _ in range(n)), "a")
    path = tmp_path / "model.safetensors"
    report = export(model, path, info=info)
    assert report.activation_bytes == 4 * 5 and report.bound_bytes == plain.bound_bytes + 20
    assert report.file_ratio <= GOAL, report.summary()
    assert report.file_bytes - plain.file_bytes < 100  # the record names 5 modules and grids: a few dozen bytes
    assert [a["signed"] for a in read(path).meta["activations"]] == [False] * 5
    inspected = inspect(path)
    assert inspected.activation_bytes == 20 and inspected.to_dict()["activation_bytes"] == 20
    fresh = load(path, digits.make_model())
    assert len(activation_quantizers(fresh)) == 5
    x = torch.rand(16, 1, 8, 8) * 2
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
