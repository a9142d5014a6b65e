"""ONNX export of quantized embedding tables: a Gather looks rows up in the codes and only those
rows are dequantized (the whole table is not dequantized on every run); a tied table's output head
keeps its DequantizeLinear; the file still reproduces the student and refuses tampered codes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import squeezer
import squeezer.compress as sc
from squeezer.compress.targets import DEFAULT_TYPES, Targets

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402

from squeezer.artifact import onnx_export, onnx_qdq  # noqa: E402
from squeezer.artifact.onnx_export import export_onnx  # noqa: E402

REGISTRY = squeezer.load_registry(autoload=False)
TABLE = "embed.weight"


class Tagger(nn.Module):
    """Token embedding -> Linear head per token; ``tied``: the head is the embedding table (a language model)."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50 if tied else 5, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.embed(ids)))


def compressed(tied: bool, per_channel: bool) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = Tagger(tied).eval()
    sc.attach(model, Targets(types=(*DEFAULT_TYPES, "Embedding")))
    sc.prune(model, lambda _p, w: w.abs(), 0.6, scope="layer")
    table = REGISTRY.create("quantizer", "lsq", {"bits": 4, "per_channel": per_channel}, where="test")
    layers = REGISTRY.create("quantizer", "lsq", {"bits": 8, "per_channel": per_channel}, where="test")
    sc.attach_quantizers(model, lambda path: ("lsq", table if path == TABLE else layers))
    return model, torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))


def readers(proto: object, name: str) -> list[str]:
    return [n.op_type for n in proto.graph.node if name in n.input]  # type: ignore[attr-defined]


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_row", "per_tensor"])
def test_a_lookup_gathers_codes_then_dequantizes_the_rows(per_channel: bool, tmp_path: Path) -> None:
    model, ids = compressed(tied=False, per_channel=per_channel)
    target = tmp_path / "tagger.onnx"
    report = export_onnx(model, target, ids, int4=False)
    assert report.gathered_weights == 1 and report.quantized == 3
    proto = onnx.load(str(target))
    codes = f"{TABLE}_quantized"
    # the table's codes are read by a Gather only: no DequantizeLinear of the whole table
    assert readers(proto, codes) == ["Gather"]
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["DequantizeLinear"] == (2 if per_channel else 3)  # the two Linears (+ the gathered rows)
    if per_channel:
        assert readers(proto, f"{TABLE}_scale") == ["Gather"]
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    table = dict(sc.compressed_weights(model))[TABLE]
    with torch.no_grad():
        student = table(sc.original(model, TABLE)).numpy()
    scale = inits[f"{TABLE}_scale"]
    assert np.array_equal(inits[codes].astype(np.float32) * (scale.reshape(-1, 1) if scale.ndim else scale), student)
    options = ort.SessionOptions()  # as the report's session hint says, to reproduce torch's outputs
    options.add_session_config_entry(onnx_export.ORT_MATMULNBITS_ACCURACY, "1")
    session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    for batch in (ids, torch.randint(0, 50, (1, 7))):
        with torch.no_grad():
            want = model(batch).numpy()
        got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_tied_table_keeps_its_dequantize_for_the_head(tmp_path: Path) -> None:
    model, ids = compressed(tied=True, per_channel=True)
    target = tmp_path / "lm.onnx"
    report = export_onnx(model, target, ids, int4=False)
    assert report.gathered_weights == 1
    proto = onnx.load(str(target))
    assert sorted(readers(proto, f"{TABLE}_quantized")) == ["DequantizeLinear", "Gather"]


def test_4_bit_codes_stay_behind_dequantize(tmp_path: Path) -> None:
    model, ids = compressed(tied=False, per_channel=True)
    report = export_onnx(model, tmp_path / "int4.onnx", ids)  # weights only: INT4 codes, which Gather cannot read
    assert report.int4 == 1 and report.gathered_weights == 0
    assert readers(onnx.load(str(tmp_path / "int4.onnx")), f"{TABLE}_quantized") == ["DequantizeLinear"]


def test_check_weights_refuses_gathered_codes_that_are_not_the_students(tmp_path: Path) -> None:
    model, ids = compressed(tied=False, per_channel=True)
    target = tmp_path / "tagger.onnx"
    export_onnx(model, target, ids, int4=False)
    proto = onnx.load(str(target))
    weights = [onnx_qdq.QuantizedWeight(TABLE, np.zeros(0), codes, scale, -8, 7)
               for codes, scale in [(numpy_helper.to_array(next(i for i in proto.graph.initializer
                                                                 if i.name == f"{TABLE}_quantized")),
                                     numpy_helper.to_array(next(i for i in proto.graph.initializer
                                                                if i.name == f"{TABLE}_scale")))]]
    gathered = {TABLE: (f"{TABLE}_quantized", f"{TABLE}_scale")}
    types = {TABLE: onnx.TensorProto.INT8}
    assert onnx_qdq.check_weights(proto, weights, types, gathered=gathered) == []
    tampered = [onnx_qdq.QuantizedWeight(TABLE, np.zeros(0), weights[0].codes + 1, weights[0].scale, -8, 7)]
    assert onnx_qdq.check_weights(proto, tampered, types, gathered=gathered) == [
        f"{TABLE} is not looked up by a Gather from initializers of its codes (type {onnx.TensorProto.INT8}) "
        "and scale"]
