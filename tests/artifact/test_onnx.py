"""ONNX export: torch.export of the baked student, quantized weights as integer codes + DequantizeLinear
(INT4 / UINT4 up to 4 bits, else INT8 / UINT8), verified in onnxruntime."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import squeezer
import squeezer.compress as sc
from squeezer.compress.model import original
from squeezer.errors import ArtifactError, PluginError
from squeezer.testing.models import make

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, numpy_helper  # noqa: E402

from squeezer.artifact import onnx_export  # noqa: E402
from squeezer.artifact.onnx_export import OnnxReport, export_onnx  # noqa: E402

REGISTRY = squeezer.load_registry(autoload=False)
QUANTIZERS = REGISTRY.names("quantizer")
MODELS = ("cnn_bn", "mlp", "conv1d_net", "depthwise_cnn")


def compressed(
    name: str, quantizer: str | None, bits: int = 4, per_channel: bool = True, signed: bool = True
) -> tuple[nn.Module, torch.Tensor]:
    """A toy model: attached, pruned to 70 %, quantized, trained two steps (steps and BN stats move)."""
    model, x = make(name, batch=4)
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.7)
    if quantizer is not None:
        options = {"bits": bits, "per_channel": per_channel, "signed": signed}
        sc.attach_quantizers(model, lambda p: (quantizer, REGISTRY.create("quantizer", quantizer, options)))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        out = model(x + 0.1 * torch.randn(x.shape, generator=g))
        loss = nn.functional.cross_entropy(out, torch.arange(len(x)) % out.shape[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    if quantizer == "lsq":
        assert any(k.endswith(".step") for k in moved)
    if name in ("cnn_bn", "depthwise_cnn"):
        assert any(k.endswith("running_mean") for k in moved)
    return model.eval(), x


def quantized_paths(model: nn.Module) -> list[str]:
    return [path for path, p in sc.compressed_weights(model) if p.quantizer is not None]


def run_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()
    options.add_session_config_entry(onnx_export.ORT_MATMULNBITS_ACCURACY, "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def code_type(q: Any, int4: bool = True) -> int:
    """INT4 / UINT4 for grids of at most 4 bits, else INT8 / UINT8 (UINT8 for codes 0..255)."""
    if int4 and q.qn <= 8 and q.qp <= (7 if q.qn else 15):
        return TensorProto.INT4 if q.qn > 0 else TensorProto.UINT4
    return TensorProto.INT8 if q.qn > 0 or q.qp <= 127 else TensorProto.UINT8


def check_export(model: nn.Module, x: torch.Tensor, target: Path, **options: Any) -> tuple[OnnxReport, Any]:
    """Export, then check the file independently of the exporter's own verification."""
    report = export_onnx(model, target, x, **options)
    proto = onnx.load(str(target))
    onnx.checker.check_model(proto, full_check=True)
    paths = quantized_paths(model)
    assert report.quantized == len(paths) and report.opset == options.get("opset", 21)
    assert report.file_bytes == target.stat().st_size and report.path == str(target)
    assert 0 <= report.max_abs_diff <= 1e-5
    assert "session.qdq_matmulnbits_accuracy_level" in report.session_hint

    nodes = Counter(node.op_type for node in proto.graph.node)
    assert nodes["DequantizeLinear"] == len(paths)
    assert nodes["QuantizeLinear"] == 0
    inits = {init.name: init for init in proto.graph.initializer}
    dq = {node.input[0]: node for node in proto.graph.node if node.op_type == "DequantizeLinear"}
    params = dict(sc.compressed_weights(model))
    for path in paths:
        p = params[path]
        q: Any = p.quantizer
        codes_init = inits[f"{path}_quantized"]
        node = dq[f"{path}_quantized"]
        expected_type = code_type(q, options.get("int4", True))
        assert codes_init.data_type == expected_type
        codes = numpy_helper.to_array(codes_init).astype(np.int16)
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero = numpy_helper.to_array(inits[node.input[2]])
        assert not zero.astype(np.int16).any() and zero.shape == scale.shape
        assert inits[node.input[2]].data_type == expected_type
        axis = {a.name: a.i for a in node.attribute}.get("axis", 1)
        if axis == 1 and codes.ndim == 2 and q.per_channel:  # stored transposed for a MatMul
            codes = codes.T
        mask = p.mask.numpy()
        assert not codes[~mask].any()  # pruned entries are code 0
        assert codes.min() >= -q.qn and codes.max() <= q.qp
        if q.per_channel:
            assert scale.shape == (codes.shape[0],)
        else:
            assert scale.shape == ()
        # DequantizeLinear(codes, scale, 0) is the student's weight, bitwise
        with torch.no_grad():
            w = original(model, path)
            student = p(w).numpy()
        s = scale.reshape((-1,) + (1,) * (codes.ndim - 1)) if scale.ndim else scale
        assert np.array_equal(codes.astype(np.float32) * s, student)

    with torch.no_grad():
        for inp in (x, torch.randn(x.shape), torch.randn((1, *x.shape[1:]))):
            want = model(inp).numpy()
            np.testing.assert_allclose(run_ort(target, inp), want, rtol=1e-4, atol=1e-5)
    return report, proto


GRID = [(name, quantizer, bits, per_channel) for name in MODELS for quantizer in QUANTIZERS
        for bits in (2, 4, 8) for per_channel in (True, False)]
#: the default suite's share of the grid (each export takes a few seconds): every model, both
#: quantizers, 4-bit codes (INT4) and 8-bit codes (INT8), per channel and per tensor
FAST = {("cnn_bn", QUANTIZERS[0], 4, True), ("mlp", QUANTIZERS[-1], 8, False),
        ("conv1d_net", QUANTIZERS[-1], 2, True), ("depthwise_cnn", QUANTIZERS[0], 8, True)}


@pytest.mark.parametrize(("name", "quantizer", "bits", "per_channel"), [
    pytest.param(*case, id="-".join(map(str, case)), marks=() if case in FAST else pytest.mark.slow) for case in GRID
])
def test_quantized_export_matches_torch(
    name: str, quantizer: str, bits: int, per_channel: bool, tmp_path: Path
) -> None:
    model, x = compressed(name, quantizer, bits, per_channel)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report, _ = check_export(model, x, tmp_path / "model.onnx")
    assert report.quantized == len(list(sc.compressed_weights(model))) > 0
    assert report.int4 == (report.quantized if bits <= 4 else 0)
    # the model itself is left as it was
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_int4_halves_the_codes_and_can_be_turned_off(tmp_path: Path) -> None:
    model, x = compressed("mlp", QUANTIZERS[0], 4)
    packed, _ = check_export(model, x, tmp_path / "int4.onnx")
    wide, _ = check_export(model, x, tmp_path / "int8.onnx", int4=False)
    assert packed.int4 == 2 and wide.int4 == 0
    codes = sum(p.mask.numel() for _, p in sc.compressed_weights(model))
    assert wide.file_bytes - packed.file_bytes >= codes // 2 - 16  # two 4-bit codes per byte


def test_opset_below_21_stores_8_bit_codes(tmp_path: Path) -> None:
    model, x = compressed("mlp", QUANTIZERS[0], 4)
    report, _ = check_export(model, x, tmp_path / "model.onnx", opset=18, int4=False)
    assert report.opset == 18 and report.int4 == 0
    again = export_onnx(model, tmp_path / "again.onnx", x, opset=18)  # int4 asked for, opset too low
    assert again.int4 == 0


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_unsigned_8_bit_codes_are_uint8(quantizer: str, tmp_path: Path) -> None:
    model, x = compressed("mlp", quantizer, 8, signed=False)
    _, proto = check_export(model, x, tmp_path / "model.onnx")
    types = {i.data_type for i in proto.graph.initializer if i.name.endswith("_quantized")}
    assert types == {TensorProto.UINT8}


@pytest.mark.parametrize("name", ["embedding_net", pytest.param("transformer_net", marks=pytest.mark.slow),
                                  pytest.param("crnn", marks=pytest.mark.slow)])
def test_other_layer_types(name: str, tmp_path: Path) -> None:
    # transformer: a Linear on 3-D input becomes DequantizeLinear (codes stored transposed, axis 1) + MatMul
    quantizer = QUANTIZERS[0]
    model, x = make(name)
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.7)
    sc.attach_quantizers(model, lambda p: (quantizer, REGISTRY.create("quantizer", quantizer, {"bits": 4})))
    model.eval()
    report = export_onnx(model, tmp_path / "model.onnx", x)
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert Counter(n.op_type for n in proto.graph.node)["DequantizeLinear"] == report.quantized > 0
    with torch.no_grad():
        np.testing.assert_allclose(run_ort(tmp_path / "model.onnx", x), model(x).numpy(), rtol=1e-4, atol=1e-5)
    if name == "transformer_net":
        producer = {out: node for node in proto.graph.node for out in node.output}
        matmuls = [n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in producer]
        assert any(producer[n.input[1]].op_type == "DequantizeLinear" for n in matmuls)
        assert not any(n.op_type == "Transpose" and producer.get(n.input[0], n).op_type == "DequantizeLinear"
                       for n in proto.graph.node)


class _WithAuxHead(nn.Module):
    """A training-only auxiliary head: compressed, but never read by the exported forward."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 4)
        self.aux = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


def test_weights_the_forward_never_reads_are_left_out(tmp_path: Path) -> None:
    model = _WithAuxHead()
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.5)
    sc.attach_quantizers(model, lambda p: (QUANTIZERS[0], REGISTRY.create("quantizer", QUANTIZERS[0], {"bits": 4})))
    report = export_onnx(model.eval(), tmp_path / "model.onnx", torch.randn(3, 8))
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert report.quantized == 1
    assert [n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"] == ["body.weight_quantized"]


@pytest.mark.parametrize("name", ["cnn_bn", *(pytest.param(n, marks=pytest.mark.slow) for n in MODELS[1:])])
def test_mask_only_weights_are_float_initializers(name: str, tmp_path: Path) -> None:
    model, x = compressed(name, None)
    report, proto = check_export(model, x, tmp_path / "model.onnx")
    assert report.quantized == 0
    inits = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for path, p in sc.compressed_weights(model):
        with torch.no_grad():
            student = p(original(model, path)).numpy()
        # exported under the parameter's name, pruned zeros included (BatchNorm is not folded in)
        assert inits[path].dtype == np.float32
        assert np.array_equal(inits[path], student) and not inits[path][~p.mask.numpy()].any()


def test_conv_layer_graph(tmp_path: Path) -> None:
    model, x = compressed("cnn_bn", QUANTIZERS[0], 4)
    export_onnx(model, tmp_path / "model.onnx", x)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    producer = {out: node for node in graph.node for out in node.output}
    conv = next(node for node in graph.node if node.op_type == "Conv")
    dq = producer[conv.input[1]]
    assert dq.op_type == "DequantizeLinear" and list(dq.input) == ["0.weight_quantized", "0.weight_scale",
                                                                    "0.weight_zero_point"]
    consumers = [node.op_type for node in graph.node if conv.output[0] in node.input]
    assert consumers == ["BatchNormalization"]
    assert [i.name for i in graph.input] == ["input"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_corrupted_scale_fails_verification_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = compressed("cnn_bn", QUANTIZERS[0], 4)
    monkeypatch.setattr(onnx_export, "_graph_scales", lambda ws: {q.path: q.scale * 1.5 for q in ws})
    target = tmp_path / "model.onnx"
    # the graph check sees that the scale is not the quantizer's
    with pytest.raises(ArtifactError, match=r"verification failed: 0.weight is not read through DequantizeLinear"):
        export_onnx(model, target, x)
    assert os.listdir(tmp_path) == []
    # and without it, onnxruntime's outputs do
    monkeypatch.setattr(onnx_export.onnx_qdq, "check_weights", lambda *a: [])
    with pytest.raises(ArtifactError, match=r"ONNX export verification failed: max \|diff\| = "):
        export_onnx(model, target, x)
    assert os.listdir(tmp_path) == []
    # an existing file keeps its content
    target.write_bytes(b"previous")
    with pytest.raises(ArtifactError):
        export_onnx(model, target, x)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.onnx"]


def test_quantize_disagreeing_with_forward_is_a_plugin_error(tmp_path: Path) -> None:
    model, x = compressed("mlp", QUANTIZERS[0], 4)
    _, p = next(iter(sc.compressed_weights(model)))
    quantizer: Any = p.quantizer
    quantize = quantizer.quantize

    def bad(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, scale = quantize(v)
        return codes, scale * 2

    quantizer.quantize = bad
    with pytest.raises(PluginError, match="differ from the quantizer's output"):
        export_onnx(model, tmp_path / "model.onnx", x)
    assert os.listdir(tmp_path) == []


def test_tolerance_is_applied(tmp_path: Path) -> None:
    model, x = compressed("mlp", QUANTIZERS[0], 4)
    with pytest.raises(ArtifactError, match="verification failed"):
        export_onnx(model, tmp_path / "model.onnx", x, rtol=0.0, atol=-1.0)
    assert os.listdir(tmp_path) == []


def test_missing_dependency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = make("mlp")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ArtifactError, match=r"pip install 'squeezer\[onnx\]'"):
        export_onnx(model, tmp_path / "model.onnx", x)


def test_low_opset_and_bad_input(tmp_path: Path) -> None:
    model, x = make("mlp")
    with pytest.raises(ArtifactError, match="opset must be at least 18"):
        export_onnx(model, tmp_path / "model.onnx", x, opset=17)
    with pytest.raises(ArtifactError, match="example_input"):
        export_onnx(model, tmp_path / "model.onnx", [])
    assert os.listdir(tmp_path) == []


def test_plain_model(tmp_path: Path) -> None:
    model, x = make("cnn_bn")
    report = export_onnx(model.eval(), tmp_path / "model.onnx", x)
    assert report.quantized == 0 and report.max_abs_diff <= 1e-5


def test_what_it_cannot_write_is_refused_naming_the_layer(tmp_path: Path) -> None:
    model, x = compressed("mlp", QUANTIZERS[0], 4)
    with pytest.raises(ArtifactError, match=r"0.weight: ONNX export writes float32 weights, this one is torch.float64"):
        export_onnx(model.double(), tmp_path / "model.onnx", x.double())
    assert os.listdir(tmp_path) == []
