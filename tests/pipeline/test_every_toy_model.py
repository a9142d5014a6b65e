"""The whole PQK pipeline on every toy architecture (MLP, CNNs with BatchNorm, depthwise-separable,
Conv1d, a CRNN with GRU and bidirectional LSTM, an embedding net, a transformer encoder): the
target sparsity and bits are reached, and the student exports to the squeezer artifact (verified
on reload by the runner) and to ONNX (verified in onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import pytest

import squeezer
from squeezer.pipeline.runner import run
from squeezer.recipe.loader import parse_recipe
from squeezer.testing.models import MODEL_NAMES, make

RECIPE = """
seed = 0
[model]
factory = "squeezer.testing.models:toy_model"
name = "{name}"
[data]
factory = "squeezer.testing.models:toy_loaders"
name = "{name}"
[targets]
types = ["Linear", "Conv1d", "Conv2d", "RNNBase", "Embedding"]
parameters = ["*in_proj_weight"]
[[stages]]
type = "train"
epochs = 1
[[stages]]
type = "prune"
scheduler = {{ name = "geometric", target = 0.7, rounds = 2 }}
quantizer = {{ name = "lsq", bits = 4, overrides = [{{ pattern = "@first", bits = 8 }}] }}
epochs_per_round = 1
[[stages]]
type = "mutual"
warmup_epochs = 1
epochs = 1
"""


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pqk_end_to_end(name: str, tmp_path: Path) -> None:
    registry = squeezer.load_registry(autoload=False)
    result = run(parse_recipe(RECIPE.format(name=name), registry=registry), out=tmp_path / "out", registry=registry)
    assert result.sparsity == pytest.approx(0.7, abs=0.02)
    bits = [b for *_, b in result.layers]
    assert bits[0] == 8 and set(bits[1:]) == {4} and len(bits) >= 2
    assert result.artifact is not None and result.model is not None
    pytest.importorskip("onnxruntime")
    from squeezer.artifact.onnx_export import export_onnx

    report = export_onnx(result.model, tmp_path / "model.onnx", make(name, batch=3).input)
    assert report.quantized == len(bits)
