"""Activation quantizers in the ONNX export: QuantizeLinear -> DequantizeLinear on the inputs of the
quantized layers, BatchNorm folded into the quantized convolutions' scales, so that onnxruntime's
CPU provider runs integer kernels (QLinearConv, QGemm). The quantizers are attached directly (no
recipe field reaches them yet)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import squeezer
import squeezer.compress as sc
from squeezer.errors import ArtifactError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
lsq_activations = pytest.importorskip("squeezer_lsq.activations")

from squeezer.artifact.onnx_export import ACTIVATION_TOLERANCE, export_onnx  # noqa: E402
from squeezer.artifact.onnx_qdq import dequantized  # noqa: E402
from squeezer.artifact.onnx_verify import session_options  # noqa: E402
from squeezer.examples.digits import make_model  # noqa: E402

REGISTRY = squeezer.load_registry(autoload=False)


def integer_digits(weight_bits: int = 8, act_bits: int = 8, calibrate: bool = True,
                   float_first: bool = False) -> tuple[nn.Module, torch.Tensor]:
    """The digits CNN, 70 % pruned, LSQ weights, LSQ activation quantizers on every Conv/Linear input
    (signed on the raw input, unsigned after a ReLU; ``float_first``: none on the raw input), steps
    initialized from one batch."""
    torch.manual_seed(0)
    model = make_model(width=8)
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.7)
    sc.attach_quantizers(model, lambda p: ("lsq", REGISTRY.create("quantizer", "lsq", {"bits": weight_bits})))
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not float_first:
        lsq_activations.attach_activation_quantizers(model, layers[:1], bits=act_bits, signed=True)
    lsq_activations.attach_activation_quantizers(model, layers[1:], bits=act_bits, signed=False)
    x = torch.randn(32, 1, 8, 8)
    model.eval()
    if calibrate:
        with torch.no_grad():
            model(x)
    return model, x


def optimized_ops(path: Path, tmp_path: Path) -> Counter[str]:
    options = session_options(ort)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)


def test_integer_kernels(tmp_path: Path) -> None:
    model, x = integer_digits()
    target = tmp_path / "model.onnx"
    report = export_onnx(model, target, x)
    assert report.activations == 5 and report.quantized == 5 and report.int4 == 0
    graph = onnx.load(str(target)).graph
    ops = Counter(n.op_type for n in graph.node)
    # 5 weights, 5 activations, the 2 Linear biases as INT32 at the accumulator's scale
    assert ops["QuantizeLinear"] == 5 and ops["DequantizeLinear"] == 12
    assert ops["BatchNormalization"] == 0  # folded into the quantized convolutions' scales
    biases = [i for i in graph.initializer if i.name.endswith("_bias_quantized")]
    assert len(biases) == 2 and all(i.data_type == onnx.TensorProto.INT32 for i in biases)
    types = {i.name: i.data_type for i in graph.initializer}
    types.update({n.output[0]: n.attribute[0].t.data_type for n in graph.node if n.op_type == "Constant"})
    zero_points = [types[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points == [onnx.TensorProto.INT8] + [onnx.TensorProto.UINT8] * 4  # signed input, then ReLUs
    # onnxruntime runs every convolution and both Linears in integer arithmetic (the head: QGemm
    # with a float output, from the INT32 bias)
    fused = optimized_ops(target, tmp_path)
    assert fused["QLinearConv"] == 3 and fused["QGemm"] == 2 and fused["Conv"] == 0 and fused["Gemm"] == 0
    peak = float(model(x).abs().max())
    assert report.rtol == 0 and report.atol == pytest.approx(ACTIVATION_TOLERANCE * peak, rel=0.5)
    assert report.max_abs_diff <= report.atol and report.argmax_rows > 0


def test_4_bit_activations_and_weights(tmp_path: Path) -> None:
    model, x = integer_digits(weight_bits=4, act_bits=4)
    report = export_onnx(model, tmp_path / "model.onnx", x)
    assert report.activations == 5 and report.int4 == 0  # INT8 codes: the integer kernels take 8-bit weights
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node)
    assert ops["Clip"] == 5  # the 4-bit grid inside the 8-bit QuantizeLinear


def test_4_bit_weights_as_int4_give_up_the_integer_kernels(tmp_path: Path) -> None:
    model, x = integer_digits(weight_bits=4)
    small, wide = tmp_path / "int4.onnx", tmp_path / "int8.onnx"
    assert export_onnx(model, small, x, int4=True).int4 == 5
    assert export_onnx(model, wide, x).int4 == 0
    assert small.stat().st_size < wide.stat().st_size
    # onnxruntime 1.32 forms QLinearConv / QGemm from INT8 weights only
    assert optimized_ops(small, tmp_path)["QLinearConv"] == 0
    assert optimized_ops(wide, tmp_path)["QLinearConv"] == 3


def test_an_uncalibrated_activation_quantizer_is_refused_by_name(tmp_path: Path) -> None:
    model, x = integer_digits(calibrate=False)
    with pytest.raises(ArtifactError, match=r"activation quantizer of 0: its step was never initialized"):
        export_onnx(model, tmp_path / "model.onnx", x)
    assert os.listdir(tmp_path) == []


def test_an_activation_quantizer_it_cannot_write_is_refused_by_name(tmp_path: Path) -> None:
    model, x = integer_digits()
    model.get_submodule("3.input_quantizer").per_channel = True
    with pytest.raises(ArtifactError, match=r"activation quantizer of 3: per-channel activation quantization"):
        export_onnx(model, tmp_path / "model.onnx", x)
    assert os.listdir(tmp_path) == []


class _Tap(nn.Module):
    """Identity: a module whose input an activation quantizer can take (a residual branch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Residual(nn.Module):
    """conv-BN-ReLU, then conv-BN-ReLU-conv-BN + identity, ReLU; global average pooling; a Linear head
    (a ResNet basic block: quantizers on the block's input, on the residual branch before the Add,
    on the pooling's input, as well as on every Conv/Linear input)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.entry, self.residual, self.act = _Tap(), _Tap(), nn.ReLU()
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.entry(self.stem(x))  # quantized once: the block's input and the identity
        h = self.act(self.residual(self.block(h)) + h)
        out: torch.Tensor = self.head(torch.flatten(self.pool(h), 1))
        return out


def test_residual_add_and_pooling_stay_integer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _Residual(), torch.randn(32, 1, 8, 8)
    model.train()
    with torch.no_grad():
        model(x)  # BatchNorm statistics of the data
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.5)
    sc.attach_quantizers(model, lambda p: ("lsq", REGISTRY.create("quantizer", "lsq", {"bits": 8})))
    lsq_activations.attach_activation_quantizers(model, ["stem.0", "residual"], signed=True)
    lsq_activations.attach_activation_quantizers(model, ["entry", "block.3", "pool", "head"], signed=False)
    model.eval()
    with torch.no_grad():
        model(x)
    target = tmp_path / "model.onnx"
    report = export_onnx(model, target, x)
    assert report.activations == 6 and report.max_abs_diff <= report.atol
    ops = Counter(n.op_type for n in onnx.load(str(target)).graph.node)
    assert ops["ReduceMean"] == 0 and ops["GlobalAveragePool"] == 1  # the same arithmetic
    fused = optimized_ops(target, tmp_path)
    assert fused["QLinearConv"] == 3 and fused["QLinearAdd"] == 1 and fused["QLinearGlobalAveragePool"] == 1
    assert fused["QGemm"] == 1
    assert not {"Conv", "FusedConv", "Add", "ReduceMean", "GlobalAveragePool", "Gemm"} & set(fused)


def test_integer_bias_is_within_half_an_accumulator_step(tmp_path: Path) -> None:
    from onnx import numpy_helper

    model, x = integer_digits()
    target = tmp_path / "model.onnx"
    export_onnx(model, target, x)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(target)).graph.initializer}
    biases = [m.bias.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    stems = [name.removesuffix("_quantized") for name in inits if name.endswith("_bias_quantized")]
    assert len(stems) == 2
    for stem, bias in zip(stems, biases, strict=True):
        codes, scale = inits[f"{stem}_quantized"], inits[f"{stem}_scale"]
        assert codes.dtype == np.int32 and not inits[f"{stem}_zero_point"].any() and (scale > 0).all()
        assert np.all(np.abs(codes * scale.astype(np.float64) - bias) <= scale / 2 * (1 + 1e-6))


def test_a_float_input_layer_gets_its_weight_as_a_float_constant(tmp_path: Path) -> None:
    """The first layer without an activation quantizer runs a float kernel in onnxruntime: its
    weight is written as the float values DequantizeLinear would compute (BatchNorm folded in),
    so the outputs equal those of the file that keeps its codes."""
    from onnx import numpy_helper

    model, x = integer_digits(float_first=True)
    folded, kept = tmp_path / "folded.onnx", tmp_path / "kept.onnx"
    report = export_onnx(model, folded, x)
    assert report.activations == 4 and report.quantized == 5 and report.float_weights == 1
    assert export_onnx(model, kept, x, fold_float_inputs=False).float_weights == 0
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(kept)).graph.initializer}
    kept_dq = next(n for n in onnx.load(str(kept)).graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0].startswith("0."))
    want = dequantized(inits[kept_dq.input[0]], inits[kept_dq.input[1]], 0)
    graph = onnx.load(str(folded)).graph
    floats = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert not any(n.input[0].startswith("0.") for n in graph.node if n.op_type == "DequantizeLinear")
    assert any(v.shape == want.shape and v.tobytes() == want.tobytes() for v in floats.values())
    # at most 3 bytes more per entry (INT8 -> FLOAT), less the DequantizeLinear node and its inputs' names
    assert folded.stat().st_size <= kept.stat().st_size + 3 * want.size
    fused = optimized_ops(folded, tmp_path)
    assert fused["QLinearConv"] == 2 and fused["QGemm"] == 2 and fused["Conv"] + fused["FusedConv"] == 1
    outputs = []
    for path in (folded, kept):
        session = ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-5)


def test_dequantized_is_codes_times_the_scale_of_their_channel() -> None:
    codes = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    scale = np.array([0.5, 0.25, 2.0], dtype=np.float32)
    per_row = dequantized(codes, scale, 0)
    assert per_row.dtype == np.float32
    np.testing.assert_array_equal(per_row, codes * scale[:, None])
    np.testing.assert_array_equal(dequantized(codes.T, scale, 1), (codes * scale[:, None]).T)
    np.testing.assert_array_equal(dequantized(codes, np.float32(0.1)), codes.astype(np.float32) * np.float32(0.1))


def test_a_float_input_matmul_keeps_its_transposed_weight(tmp_path: Path) -> None:
    """A Linear on a 3-D input is a MatMul reading the transposed weight: its float constant is
    the transposed dequantized weight, and onnxruntime reproduces the student."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 5))
    sc.attach(model)
    sc.prune(model, lambda p, w: w.abs(), 0.5)
    sc.attach_quantizers(model, lambda p: ("lsq", REGISTRY.create("quantizer", "lsq", {"bits": 8})))
    lsq_activations.attach_activation_quantizers(model, ["2"], signed=False)
    x = torch.randn(4, 7, 6)
    model.eval()
    with torch.no_grad():
        model(x)
    report = export_onnx(model, tmp_path / "model.onnx", x)
    assert report.float_weights == 1 and report.max_abs_diff <= report.atol
    fused = optimized_ops(tmp_path / "model.onnx", tmp_path)
    assert fused["DequantizeLinear"] == 0  # the second MatMul integer, the first reads a float constant
