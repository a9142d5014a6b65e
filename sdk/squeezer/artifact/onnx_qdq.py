"""Graph passes that put the quantization of a compressed student into an exported ONNX model.

The model is exported in float (the baked student: masked, fake-quantized weights as plain
float parameters). :func:`quantize_weights` then replaces the float initializer of every quantized
weight by its integer codes, a scale and a zero point feeding a ``DequantizeLinear`` whose output
takes the initializer's name, so that no consumer changes::

    <path>_quantized  (INT8 / UINT8, or INT4 / UINT4 from opset 21: the codes, 0 at pruned positions)
    <path>_scale      (FLOAT: [C] per output channel, or a scalar per tensor)
    <path>_zero_point (zeros of the codes' type, the shape of the scale)
        -> DequantizeLinear -> Conv, Gemm, MatMul, Gather, ...

``DequantizeLinear(codes, scale, 0) = codes * scale`` is bitwise the student's weight. A weight
that the exporter transposes for a ``MatMul`` (``Transpose(W) -> MatMul``) is stored transposed,
with the per-channel axis moved to 1, so that ``DequantizeLinear`` feeds the ``MatMul`` directly,
the pattern onnxruntime fuses. Initializers are matched to weights by the exporter's name for the
parameter (its fully qualified name, from torch.export's graph signature) and checked bitwise by
value; when the name is absent the initializer holding the weight's exact value is used.

Activations: the exporter writes ``QuantizeLinear -> DequantizeLinear`` for every activation
quantizer through :func:`activation_translation` (the torch custom op ``squeezer::activation_qdq``
stands for the quantizer in the exported program).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

#: DequantizeLinear with INT4 / UINT4 inputs needs opset 21
INT4_OPSET = 21


@attrs.frozen
class QuantizedWeight:
    """Integer codes and scale of one quantized weight (``codes * scale`` is the student's weight)."""

    path: str
    value: np.ndarray  # the baked float weight the exporter wrote (the student's, bitwise)
    codes: np.ndarray  # int8 / uint8 holding the codes, the weight's shape
    scale: np.ndarray  # float32: [C] per output channel (axis 0) or [] per tensor
    lo: int  # the quantizer's grid [lo, hi] (not only the codes it happens to use)
    hi: int


def code_type(lo: int, hi: int, opset: int, int4: bool) -> int:
    """The ONNX element type of codes on the grid ``[lo, hi]``: 4-bit where allowed, else 8-bit."""
    from onnx import TensorProto

    if int4 and opset >= INT4_OPSET:
        if lo >= -8 and hi <= 7:
            return int(TensorProto.INT4)
        if lo >= 0 and hi <= 15:
            return int(TensorProto.UINT4)
    if lo >= -128 and hi <= 127:
        return int(TensorProto.INT8)
    if lo >= 0 and hi <= 255:
        return int(TensorProto.UINT8)
    raise ValueError(f"codes span [{lo}, {hi}]; ONNX holds codes of at most 8 bits")


def _numpy_type(elem_type: int) -> Any:
    import ml_dtypes
    from onnx import TensorProto

    types: dict[int, Any] = {int(TensorProto.INT4): ml_dtypes.int4, int(TensorProto.UINT4): ml_dtypes.uint4,
                             int(TensorProto.INT8): np.int8, int(TensorProto.UINT8): np.uint8}
    return types[elem_type]


class MappingError(ValueError):
    """A quantized weight has no initializer holding its value in the exported graph."""


def quantize_weights(proto: Any, weights: Sequence[QuantizedWeight], *, opset: int, int4: bool,
                     scales: dict[str, np.ndarray] | None = None) -> dict[str, int]:
    """Replace each weight's float initializer in ``proto`` (in place) by codes + DequantizeLinear.

    Returns the ONNX element type of each weight's codes. ``scales`` overrides the scale written
    for a path (a seam for tests that corrupt it). Raises :class:`MappingError` naming the first
    weight that has no initializer of its exact value.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    by_value: dict[tuple[tuple[int, ...], bytes], str] | None = None
    consumers = _consumers(graph)
    new_nodes, types = [], {}
    drop: set[str] = set()
    for q in weights:
        want = q.value
        name = q.path if q.path in inits and _equal(inits[q.path], want) else None
        if name is None:
            if by_value is None:
                by_value = {(tuple(init.dims), numpy_helper.to_array(init).tobytes()): init.name
                            for init in graph.initializer if init.data_type == 1}
            name = by_value.get((tuple(want.shape), want.tobytes()))
        if name is None or name in drop:
            raise MappingError(f"{q.path}: no initializer of the exported graph holds this weight's value")
        drop.add(name)
        elem = code_type(q.lo, q.hi, opset, int4)
        types[q.path] = elem
        codes, axis, out = q.codes, 0, name
        users = consumers.get(name, [])
        if codes.ndim == 2 and users and all(_is_transpose_2d(n) for n in users) and len(users) == 1:
            transpose = users[0]
            codes, axis, out = codes.T, 1, transpose.output[0]
            graph.node.remove(transpose)
        scale = (scales or {}).get(q.path, q.scale).astype(np.float32)
        graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(codes).astype(_numpy_type(elem)), f"{q.path}_quantized"),
            numpy_helper.from_array(scale, f"{q.path}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, dtype=_numpy_type(elem)), f"{q.path}_zero_point"),
        ])
        node = helper.make_node(
            "DequantizeLinear", [f"{q.path}_quantized", f"{q.path}_scale", f"{q.path}_zero_point"], [out],
            name=f"{q.path}_DequantizeLinear",
        )
        if scale.ndim == 1:
            node.attribute.append(helper.make_attribute("axis", axis))
        new_nodes.append(node)
    kept = [init for init in graph.initializer if init.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for i, node in enumerate(new_nodes):  # before every other node: the graph stays topologically sorted
        graph.node.insert(i, node)
    return types


def _equal(init: Any, want: np.ndarray) -> bool:
    from onnx import numpy_helper

    have = numpy_helper.to_array(init)
    return have.dtype == want.dtype and have.shape == want.shape and have.tobytes() == want.tobytes()


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _is_transpose_2d(node: Any) -> bool:
    if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return False
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return perm in (None, [1, 0])


def check_weights(proto: Any, weights: Sequence[QuantizedWeight], types: dict[str, int],
                  scales: dict[str, np.ndarray] | None = None) -> list[str]:
    """Problems with ``proto``'s weights: each read through a DequantizeLinear from an integer
    initializer of its codes' type and shape (transposed for a MatMul), holding its codes and
    scale. The optimizer may have merged weights of identical codes and scale into one (layers
    copied from one another before training); such a weight is read through the one it equals.
    Empty when all is well."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    readers: dict[tuple[int, tuple[int, ...], bytes, bytes], str] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and node.input[1] in inits:
            codes, scale = inits[node.input[0]], numpy_helper.to_array(inits[node.input[1]])
            key = (codes.data_type, tuple(codes.dims), _int_bytes(codes), scale.astype(np.float32).tobytes())
            readers[key] = node.input[0]
    problems = []
    for q in weights:
        scale_bytes = (scales or {}).get(q.path, q.scale).astype(np.float32).tobytes()
        keys = [(types[q.path], tuple(c.shape), np.ascontiguousarray(c).astype(np.int64).tobytes(), scale_bytes)
                for c in (q.codes, q.codes.T)]
        if not any(key in readers for key in keys):
            problems.append(f"{q.path} is not read through DequantizeLinear from an initializer of its codes "
                            f"(type {types[q.path]}) and scale")
    return problems


def _int_bytes(init: Any) -> bytes:
    from onnx import numpy_helper

    return np.asarray(numpy_helper.to_array(init)).astype(np.int64).tobytes()


def fold_batchnorm(proto: Any, weights: Sequence[QuantizedWeight]) -> dict[str, np.ndarray]:
    """Fold each ``BatchNormalization`` that alone reads a ``Conv`` of a quantized weight into that
    weight's scale and the convolution's bias, in place: ``k = gamma / sqrt(var + eps)`` per output
    channel, ``scale' = scale * k`` (the codes are unchanged: BatchNorm is an affine map per output
    channel), ``bias' = (bias - mean) * k + beta``. The result is the student's up to float rounding
    (computed in float64); without it onnxruntime cannot form an integer convolution followed by the
    next activation's QuantizeLinear. Returns the new scale of every weight folded."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    consumers = _consumers(graph)
    producer = {out: node for node in graph.node for out in node.output}
    paths = {f"{q.path}_quantized": q.path for q in weights}
    folded: dict[str, np.ndarray] = {}
    for conv in list(graph.node):
        if conv.op_type != "Conv" or len(conv.input) < 2:
            continue
        dq = producer.get(conv.input[1])
        users = consumers.get(conv.output[0], [])
        if (dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in paths or len(users) != 1
                or users[0].op_type != "BatchNormalization" or len(consumers.get(dq.output[0], [])) != 1
                or not all(name in inits for name in users[0].input[1:5])
                or (len(conv.input) > 2 and conv.input[2] not in inits)):
            continue
        bn = users[0]
        if len(bn.output) != 1:
            continue  # training-mode BatchNormalization (running statistics as outputs)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + eps)
        scale_init = inits[dq.input[1]]
        scale = numpy_helper.to_array(scale_init).astype(np.float64)
        new_scale = (np.broadcast_to(scale, k.shape) * k).astype(np.float32)
        bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 else 0.0
        new_bias = ((bias - mean) * k + beta).astype(np.float32)
        path = paths[dq.input[0]]
        scale_init.CopyFrom(numpy_helper.from_array(new_scale, scale_init.name))
        zp_init = inits[dq.input[2]]
        zeros = numpy_helper.to_array(zp_init)
        zp_init.CopyFrom(numpy_helper.from_array(np.zeros(new_scale.shape, dtype=zeros.dtype), zp_init.name))
        if not any(a.name == "axis" for a in dq.attribute):
            dq.attribute.append(helper.make_attribute("axis", 0))
        bias_name = f"{path}_folded_bias"
        graph.initializer.append(numpy_helper.from_array(new_bias, bias_name))
        if len(conv.input) > 2:
            conv.input[2] = bias_name
        else:
            conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded[path] = new_scale
    if folded:
        read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        kept = [init for init in graph.initializer if init.name in read]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return folded


# --- activations -----------------------------------------------------------------------------


def activation_translation(opset: int) -> Any:
    """The ONNX translation of ``squeezer::activation_qdq(x, scale, qn, qp)``: ``QuantizeLinear ->
    DequantizeLinear`` on 8 bits (UINT8 when ``qn == 0``, else INT8), preceded by a ``Clip`` to
    ``[-qn * scale, qp * scale]`` when the grid is narrower than the 8-bit type."""
    import onnxscript
    from onnxscript import ir

    op = onnxscript.values.Opset("", opset)

    def activation_qdq(x: Any, scale: float, qn: int, qp: int) -> Any:
        lo, hi = (0, 255) if qn == 0 else (-128, 127)
        zp_type = np.uint8 if qn == 0 else np.int8
        s = op.Constant(value=ir.tensor(np.array(scale, dtype=np.float32)))
        z = op.Constant(value=ir.tensor(np.array(0, dtype=zp_type)))
        if (-qn, qp) != (lo, hi):
            low = op.Constant(value=ir.tensor(np.array(-qn * scale, dtype=np.float32)))
            high = op.Constant(value=ir.tensor(np.array(qp * scale, dtype=np.float32)))
            x = op.Clip(x, low, high)
        return op.DequantizeLinear(op.QuantizeLinear(x, s, z), s, z)

    return activation_qdq


def activation_pairs(proto: Any) -> int:
    """How many ``QuantizeLinear -> DequantizeLinear`` pairs on activations ``proto`` holds."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    return sum(
        node.op_type == "DequantizeLinear" and getattr(producer.get(node.input[0]), "op_type", None) == "QuantizeLinear"
        for node in proto.graph.node
    )
