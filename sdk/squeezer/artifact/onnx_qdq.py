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
                  scales: dict[str, np.ndarray] | None = None, floats: dict[str, str] | None = None,
                  gathered: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Problems with ``proto``'s weights: each read through a DequantizeLinear from an integer
    initializer of its codes' type and shape (transposed for a MatMul), holding its codes and
    scale; or, for the ``floats`` of :func:`float_input_weights`, a float initializer holding
    ``codes * scale``; or, for the ``gathered`` of :func:`gathered_weights`, read by a Gather from
    initializers holding its codes and scale. The optimizer may have merged weights of identical
    codes and scale into one (layers copied from one another before training); such a weight is read
    through the one it equals. Empty when all is well."""
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
        if floats and q.path in floats:
            name = floats[q.path]
            want = dequantized(q.codes, (scales or {}).get(q.path, q.scale))
            have = np.asarray(numpy_helper.to_array(inits[name])) if name in inits else None
            if have is None or not any(have.shape == w.shape and have.tobytes() == w.tobytes()
                                       for w in (want, np.ascontiguousarray(want.T))):
                problems.append(f"{q.path} is not stored as a float initializer holding codes * scale")
            continue
        scale_bytes = (scales or {}).get(q.path, q.scale).astype(np.float32).tobytes()
        if gathered and q.path in gathered:
            codes_name, scale_name = gathered[q.path]
            codes_init, scale_init = inits.get(codes_name), inits.get(scale_name)
            if (codes_init is None or scale_init is None or codes_init.data_type != types[q.path]
                    or tuple(codes_init.dims) != q.codes.shape
                    or _int_bytes(codes_init) != np.ascontiguousarray(q.codes).astype(np.int64).tobytes()
                    or numpy_helper.to_array(scale_init).astype(np.float32).tobytes() != scale_bytes
                    or not any(n.op_type == "Gather" and n.input[0] == codes_name for n in graph.node)):
                problems.append(f"{q.path} is not looked up by a Gather from initializers of its codes "
                                f"(type {types[q.path]}) and scale")
            continue
        keys = [(types[q.path], tuple(c.shape), np.ascontiguousarray(c).astype(np.int64).tobytes(), scale_bytes)
                for c in (q.codes, q.codes.T)]
        if not any(key in readers for key in keys):
            problems.append(f"{q.path} is not read through DequantizeLinear from an initializer of its codes "
                            f"(type {types[q.path]}) and scale")
    return problems


def dequantized(codes: np.ndarray, scale: np.ndarray, axis: int = 0) -> np.ndarray:
    """``codes * scale`` in float32 as ``DequantizeLinear`` with zero point 0 computes it (``scale``
    per tensor, or per channel along ``axis``)."""
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 1:
        s = s.reshape([-1 if d == axis % codes.ndim else 1 for d in range(codes.ndim)])
    return (np.asarray(codes).astype(np.float32) * s).astype(np.float32)


#: operators whose input 0 is the activation and input 1 the weight; integer kernels only where input 0
#: is read through DequantizeLinear
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def float_input_weights(proto: Any, weights: Sequence[QuantizedWeight]) -> dict[str, str]:
    """Store as float, in place, each quantized weight that only layers with a float input read
    (no activation quantizer before them, such as a first layer left in full precision): returns
    the path -> float initializer name of each.

    onnxruntime runs such a layer as a float kernel whatever its weight's type; with the weight
    behind ``DequantizeLinear`` it dequantizes on every run and cannot prepack the weight, which
    made the first convolution of the KWS DS-CNN 2.2x slower than in the FP32 model. The float
    initializer holds what that ``DequantizeLinear`` computed from the graph's own codes and scale
    (:func:`dequantized`), so no output changes; the file grows by 3 bytes per entry of those
    weights (INT8 -> FLOAT)."""
    from onnx import numpy_helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    paths = {f"{q.path}_quantized": q.path for q in weights}
    out: dict[str, str] = {}
    for dq in list(graph.node):
        path = paths.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        users = consumers.get(dq.output[0], []) if path is not None else []
        if path is None or not users or not all(name in inits for name in dq.input) or any(
                u.op_type not in _WEIGHTED or list(u.input[1:2]) != [dq.output[0]]
                or getattr(producer.get(u.input[0]), "op_type", None) == "DequantizeLinear" for u in users):
            continue
        if not _zero_points_are_zero(dq, inits):
            continue
        codes, scale = (numpy_helper.to_array(inits[name]) for name in dq.input[:2])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        graph.node.remove(dq)
        graph.initializer.append(numpy_helper.from_array(dequantized(codes, scale, axis), dq.output[0]))
        out[path] = dq.output[0]
    if out:
        _drop_unread_initializers(graph)
    return out


def gathered_weights(proto: Any, weights: Sequence[QuantizedWeight]) -> dict[str, tuple[str, str]]:
    """Look up an embedding table's rows in its codes, then dequantize only those, in place: returns
    path -> (codes, scale) initializer names of each quantized weight a ``Gather`` now reads as codes.

    ``DequantizeLinear -> Gather`` (an embedding table, or a tied one's lookup) dequantizes the whole
    table on every run to read a few rows of it (BERT-base: 23 M entries per run).
    ``Gather(codes) -> DequantizeLinear`` per tensor, or ``Gather(codes) -> Cast -> Mul(Gather(scale))``
    with one scale per row, computes the same values (zero points are 0: ``codes * scale``, one exact
    product) for the gathered rows only. A tied table's other readers (a language model's output head)
    keep its ``DequantizeLinear``. 8-bit codes only: ONNX's Gather takes no INT4 (opset 21)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    consumers = _consumers(graph)
    paths = {f"{q.path}_quantized": q.path for q in weights}
    out: dict[str, tuple[str, str]] = {}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in paths]:
        path, (codes_name, scale_name) = paths[dq.input[0]], dq.input[:2]
        if not all(name in inits for name in dq.input) or inits[codes_name].data_type not in (
                TensorProto.INT8, TensorProto.UINT8):
            continue
        if not _zero_points_are_zero(dq, inits):
            continue
        codes, scale = inits[codes_name], numpy_helper.to_array(inits[scale_name])
        rank = len(codes.dims)
        dq_axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % rank
        users = consumers.get(dq.output[0], [])
        for k, gather in enumerate(u for u in users if u.op_type == "Gather" and u.input[0] == dq.output[0]):
            axis = next((a.i for a in gather.attribute if a.name == "axis"), 0) % rank
            if scale.ndim == 1 and dq_axis != axis:
                continue  # scales along another axis than the lookup's: left as it is
            stem, result = f"{path}_gather{k}", gather.output[0]
            nodes = [helper.make_node("Gather", [codes_name, gather.input[1]], [f"{stem}_codes"], axis=axis,
                                      name=f"{stem}_Gather")]
            if scale.ndim == 0:
                nodes.append(helper.make_node("DequantizeLinear", [f"{stem}_codes", *dq.input[1:]], [result],
                                              name=f"{stem}_DequantizeLinear"))
            else:  # the rows' scales, broadcast over the entries after the lookup's axis (if any)
                rows, trailing = f"{stem}_rows", rank - 1 - axis
                nodes.append(helper.make_node("Gather", [scale_name, gather.input[1]], [rows], axis=0,
                                              name=f"{stem}_GatherScale"))
                if trailing:
                    graph.initializer.append(numpy_helper.from_array(
                        np.arange(-trailing, 0, dtype=np.int64), f"{stem}_trailing_axes"))
                    nodes.append(helper.make_node("Unsqueeze", [rows, f"{stem}_trailing_axes"], [f"{stem}_scale"],
                                                  name=f"{stem}_Unsqueeze"))
                    rows = f"{stem}_scale"
                nodes += [
                    helper.make_node("Cast", [f"{stem}_codes"], [f"{stem}_float"], to=TensorProto.FLOAT,
                                     name=f"{stem}_Cast"),
                    helper.make_node("Mul", [f"{stem}_float", rows], [result], name=f"{stem}_Mul"),
                ]
            at = list(graph.node).index(gather)
            graph.node.remove(gather)
            for i, node in enumerate(nodes):
                graph.node.insert(at + i, node)
            out[path] = (codes_name, scale_name)
        if path in out and not any(dq.output[0] in n.input for n in graph.node):
            graph.node.remove(dq)
    if out:
        _drop_unread_initializers(graph)
    return out


def _zero_points_are_zero(dq: Any, inits: dict[str, Any]) -> bool:
    """Whether ``dq``'s zero point is absent or all zeros: squeezer writes zero points of 0, and the
    rewrites rely on it (``codes * scale``); another graph's are left as they are."""
    from onnx import numpy_helper

    return len(dq.input) < 3 or not np.asarray(numpy_helper.to_array(inits[dq.input[2]])).astype(np.int64).any()


def _drop_unread_initializers(graph: Any) -> None:
    """Remove the initializers no node and no graph output reads (left by a rewrite), in place."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _int_bytes(init: Any) -> bytes:
    from onnx import numpy_helper

    return np.asarray(numpy_helper.to_array(init)).astype(np.int64).tobytes()


def prepare_integer(proto: Any, weights: Sequence[QuantizedWeight]) -> dict[str, np.ndarray]:
    """Prepare a model with quantized activations for onnxruntime's integer kernels, in place:

    1. fold each ``BatchNormalization`` that alone reads a ``Conv`` of a quantized weight into that
       weight's scale and the convolution's bias: ``k = gamma / sqrt(var + eps)`` per output
       channel, ``scale' = scale * k`` (the codes are unchanged: BatchNorm is an affine map per
       output channel), ``bias' = (bias - mean) * k + beta``. The result is the student's up to
       float rounding (computed in float64); without it onnxruntime cannot form an integer
       convolution followed by the next activation's QuantizeLinear;
    2. :func:`global_average_pools` (exact) and 3. :func:`integer_biases` (within half a step of
       the accumulator per output), which let onnxruntime run global average pooling between
       quantized activations and a Gemm whose output is not quantized (a classifier head) in
       integer arithmetic.

    Returns the new scale of every weight folded (step 1)."""
    folded = fold_batchnorm(proto, weights)
    global_average_pools(proto)
    integer_biases(proto)
    return folded


def fold_batchnorm(proto: Any, weights: Sequence[QuantizedWeight]) -> dict[str, np.ndarray]:
    """Step 1 of :func:`prepare_integer`; returns the new scale of every weight folded."""
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
        _drop_unread_initializers(graph)
    return folded


def _constant(graph: Any, name: str, inits: dict[str, Any] | None = None) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer or a ``Constant`` node's output, else None."""
    from onnx import numpy_helper

    inits = {init.name: init for init in graph.initializer} if inits is None else inits
    if name in inits:
        return np.asarray(numpy_helper.to_array(inits[name]))
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = next((a for a in node.attribute if a.name == "value"), None)
            return None if value is None else np.asarray(numpy_helper.to_array(value.t))
    return None


def _rank(proto: Any, name: str) -> int | None:
    """The rank of the value ``name`` from the graph's value_info (or shape inference), if known."""
    import onnx

    for value in [*proto.graph.value_info, *proto.graph.input]:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shape inference is a hint here: no rank, no rewrite
        return None
    for value in inferred.graph.value_info:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def global_average_pools(proto: Any) -> int:
    """Replace each ``ReduceMean`` over the two spatial axes of a 4-D activation read through
    ``DequantizeLinear`` by ``GlobalAveragePool`` (followed by ``Squeeze`` of those axes when it
    did not keep them), in place: the same arithmetic, in the form onnxruntime fuses with its
    ``DequantizeLinear`` and the next ``QuantizeLinear`` into ``QLinearGlobalAveragePool`` (it has
    no integer ReduceMean). Returns how many were replaced."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}
    replaced = 0
    for node in list(graph.node):
        if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        source = producer.get(node.input[0])
        if source is None or source.op_type != "DequantizeLinear" or source.input[0] in inits:
            continue
        axes = _constant(graph, node.input[1], inits)
        rank = _rank(proto, node.input[0])
        if axes is None or rank != 4 or sorted(int(a) % 4 for a in axes.reshape(-1)) != [2, 3]:
            continue
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        position = list(graph.node).index(node)
        graph.node.remove(node)
        if keep:
            graph.node.insert(position, helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]],
                                                         name=f"{node.name}_GlobalAveragePool"))
        else:
            pooled, axes_name = f"{node.output[0]}_pooled", f"{node.output[0]}_spatial_axes"
            graph.initializer.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), axes_name))
            graph.node.insert(position, helper.make_node("GlobalAveragePool", [node.input[0]], [pooled],
                                                         name=f"{node.name}_GlobalAveragePool"))
            graph.node.insert(position + 1, helper.make_node("Squeeze", [pooled, axes_name], [node.output[0]],
                                                             name=f"{node.name}_Squeeze"))
        replaced += 1
        if node.input[1] in inits and not any(node.input[1] in other.input for other in graph.node):
            graph.initializer.remove(inits.pop(node.input[1]))  # the axes, read by nothing else
    return replaced


def integer_biases(proto: Any) -> int:
    """Store the float bias of each ``Gemm`` that reads an activation and a weight through
    ``DequantizeLinear`` (both with zero point 0, the activation per tensor) as INT32 at the
    accumulator's scale ``s_x * s_w`` (per output channel), read through its own
    ``DequantizeLinear``, in place: onnxruntime then runs the Gemm as ``QGemm`` with a float
    output where no ``QuantizeLinear`` follows (a classifier head), instead of dequantizing its
    input and weight on every run. onnxruntime rounds the bias so itself where a ``QuantizeLinear``
    follows; the rounding moves each output by at most ``s_x * s_w / 2``. Returns how many."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}
    consumers = _consumers(graph)
    changed = 0
    for gemm in list(graph.node):
        if gemm.op_type != "Gemm" or gemm.domain not in ("", "ai.onnx") or len(gemm.input) < 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            continue
        dq_x, dq_w = producer.get(gemm.input[0]), producer.get(gemm.input[1])
        bias_name = gemm.input[2]
        if (dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear"
                or bias_name not in inits or inits[bias_name].data_type != 1 or dq_w.input[0] not in inits
                or len(consumers.get(bias_name, [])) != 1):
            continue
        s_x, s_w = _constant(graph, dq_x.input[1], inits), _constant(graph, dq_w.input[1], inits)
        z_x = _constant(graph, dq_x.input[2], inits) if len(dq_x.input) > 2 else np.zeros(())
        z_w = _constant(graph, dq_w.input[2], inits) if len(dq_w.input) > 2 else np.zeros(())
        if s_x is None or s_w is None or z_x is None or z_w is None or s_x.size != 1 or z_x.any() or z_w.any():
            continue
        bias = numpy_helper.to_array(inits[bias_name]).astype(np.float64)
        channel_axis = 0 if attrs.get("transB", 0) else 1  # of the weight, [N, K] or [K, N]
        n = inits[dq_w.input[0]].dims[channel_axis]
        w_axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
        if bias.shape != (n,) or (s_w.size != 1 and (s_w.shape != (n,) or w_axis != channel_axis)):
            continue
        scale = (np.broadcast_to(s_w.astype(np.float64), (n,)) * float(s_x.reshape(()))).astype(np.float32)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            continue
        codes = np.round(bias / scale.astype(np.float64))
        if np.abs(codes).max(initial=0) >= 2**31 - 1:
            continue
        stem = gemm.output[0]
        graph.initializer.extend([
            numpy_helper.from_array(codes.astype(np.int32), f"{stem}_bias_quantized"),
            numpy_helper.from_array(scale, f"{stem}_bias_scale"),
            numpy_helper.from_array(np.zeros((n,), dtype=np.int32), f"{stem}_bias_zero_point"),
        ])
        node = helper.make_node("DequantizeLinear", [f"{stem}_bias_quantized", f"{stem}_bias_scale",
                                                     f"{stem}_bias_zero_point"], [f"{stem}_bias"],
                                name=f"{stem}_bias_DequantizeLinear", axis=0)
        graph.node.insert(list(graph.node).index(gemm), node)
        gemm.input[2] = f"{stem}_bias"
        graph.initializer.remove(inits.pop(bias_name))
        changed += 1
    return changed


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
