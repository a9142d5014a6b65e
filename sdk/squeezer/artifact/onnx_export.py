"""Export the student of a compressed model to ONNX, with its quantized weights as integer codes.

Every quantized compressed weight ``W`` appears in the graph in the standard QDQ form of a
constant weight (opset >= 13)::

    <path>_quantized (INT8 initializer: the integer codes, 0 at pruned positions)
    <path>_scale     (FLOAT initializer: 1-D [C] per channel with axis=0, or a scalar per tensor)
    <path>_zero_point (INT8 zeros, the shape of the scale)
        -> DequantizeLinear -> the consumers of W (Conv, Gemm, MatMul, Gather, ...)

so that ``W = DequantizeLinear(codes, scale, 0) = codes * scale``, bitwise the student's weight.
No ``QuantizeLinear`` is emitted for weights: a runtime reading QDQ models takes a constant
``DequantizeLinear`` input as an already-quantized weight (this is also what onnxruntime's own
quantization tools write). The unsigned 8-bit grid (codes 0..255) uses UINT8 codes and zero point.
Unquantized (mask-only) weights are plain float initializers holding the pruned zeros. The rest
of the model is exported as torch.onnx's TorchScript-based exporter writes it, in eval mode,
without folding BatchNorm into the preceding convolution (onnxruntime fuses it when it loads the
model); the first dimension of every input and output is a dynamic ``batch`` axis.

The written model is verified before it is moved into place: onnxruntime must reproduce torch's
student outputs on the example input, on random inputs of its shape and on a batch of one, and
the graph must hold one ``DequantizeLinear`` per quantized weight reading integer codes.

onnxruntime's default optimizations replace ``DequantizeLinear`` + ``MatMul`` (a Linear applied to
a 3-D input, e.g. in a transformer) by its ``MatMulNBits`` kernel, which by default computes with
activations quantized to int8 (outputs ~1e-3 off the student). Verification runs it in float32
(session config ``session.qdq_matmulnbits_accuracy_level = "1"``); set the same entry in a
deployment to get the student's outputs.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezer.artifact.codes import checked_codes
from squeezer.artifact.writer import _atomic_write
from squeezer.compress.model import bake, original
from squeezer.compress.targets import get_submodule_and_attr
from squeezer.compress.weight import CompressedWeight, compressed_weights, view
from squeezer.errors import ArtifactError

StrPath = str | os.PathLike[str]

INSTALL_HINT = "pip install 'squeezer[onnx]'"
#: DequantizeLinear with a per-axis scale needs opset 13
MIN_OPSET = 13
#: random inputs checked besides the example input (and a batch of one)
RANDOM_CHECKS = 2
#: onnxruntime session option: the compute precision of MatMulNBits, 1 = float32 (see _verify)
ORT_MATMULNBITS_ACCURACY = "session.qdq_matmulnbits_accuracy_level"


@attrs.frozen
class OnnxReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduced torch."""

    path: str
    opset: int
    #: quantized weights, each stored as integer codes + DequantizeLinear
    quantized: int
    #: largest |onnxruntime - torch| over every checked input and output
    max_abs_diff: float
    file_bytes: int


@attrs.frozen
class _QuantizedWeight:
    path: str
    codes: torch.Tensor  # int8 (uint8 for codes 0..255), the weight's shape
    scale: torch.Tensor  # float: [C] per channel (axis 0) or [] per tensor


def export_onnx(
    model: nn.Module,
    path: StrPath,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    *,
    opset: int = 17,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    dynamic_batch: bool = True,
) -> OnnxReport:
    """Write the student of ``model`` (pruned, quantized) to the ONNX file ``path``, verified.

    ``example_input`` (a tensor, or a sequence of tensors for several inputs) is what the model
    is traced with. The model itself is left untouched (a deep copy is exported, in eval mode).
    ``dynamic_batch`` names the first dimension of every input and output ``batch`` (and checks a
    batch of one); turn it off for a model whose traced graph fixes its batch size.
    Raises :class:`~squeezer.errors.ArtifactError` when onnx/onnxruntime are missing, when the
    export fails, or when onnxruntime's outputs differ from torch's by more than
    ``atol + rtol * |torch|``; ``path`` then keeps its previous content (or stays absent).
    """
    target = os.fspath(path)
    onnx, ort = _import_onnx()
    if opset < MIN_OPSET:
        raise ArtifactError(f"{target}: opset must be at least {MIN_OPSET} (per-channel DequantizeLinear), got {opset}")
    inputs = _as_inputs(example_input, target)

    student = copy.deepcopy(model).cpu().eval()
    quantized = _quantized_weights(student)
    checks = _check_inputs(inputs, dynamic_batch)
    with torch.no_grad(), view(student, "student"):
        with _reads_of_compressed_weights(student) as used:
            expected = [_flat_outputs(student(*x), target) for x in checks]
        bake(student)
    graphed = [q for q in quantized if q.path in used]  # a weight the forward never reads is not exported
    for q in quantized:
        module, attr = get_submodule_and_attr(student, q.path)
        parametrize.register_parametrization(module, attr, _Dequantize(q.codes, q.scale), unsafe=True)

    output_dims = [a.ndim for a in expected[0]]
    proto = _torch_export(student, inputs, output_dims, opset, dynamic_batch, target)
    _name_quantized_initializers(proto, graphed)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ArtifactError(f"{target}: exported ONNX model is invalid: {_first_line(e)}") from None
    _check_graph(proto, graphed, target)
    data = proto.SerializeToString()
    max_diff = _verify(ort, data, checks, expected, rtol, atol, target)
    _atomic_write(target, data)
    return OnnxReport(target, opset, len(graphed), max_diff, len(data))


# --- quantized weights -------------------------------------------------------------------------


class _DequantizeFn(torch.autograd.Function):
    """``codes * scale`` in torch; ``DequantizeLinear(codes, scale, zero_point)`` in ONNX."""

    @staticmethod
    def forward(ctx: Any, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        s = scale.reshape((-1,) + (1,) * (codes.dim() - 1)) if scale.dim() == 1 else scale
        return codes.to(scale.dtype) * s

    @staticmethod
    def symbolic(g: Any, codes: Any, scale: Any, zero_point: Any) -> Any:
        if scale.type().dim() == 1:
            return g.op("DequantizeLinear", codes, scale, zero_point, axis_i=0)
        return g.op("DequantizeLinear", codes, scale, zero_point)


class _Dequantize(nn.Module):
    """Parametrization standing for a quantized weight: its codes and scale, nothing learned."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scale", _graph_scale(scale))
        self.register_buffer("zero_point", torch.zeros(scale.shape, dtype=codes.dtype))

    def forward(self, _weight: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _DequantizeFn.apply(self.codes, self.scale, self.zero_point)
        return out


@contextmanager
def _reads_of_compressed_weights(model: nn.Module) -> Iterator[set[str]]:
    """Within the block, collect the paths of the compressed weights the model's forward reads
    (a training-only head, say, is never read and so never appears in the graph)."""
    used: set[str] = set()
    handles = [p.register_forward_hook(lambda *_, path=path: used.add(path))
               for path, p in compressed_weights(model)]
    try:
        yield used
    finally:
        for handle in handles:
            handle.remove()


def _graph_scale(scale: torch.Tensor) -> torch.Tensor:
    """The scale tensor written to the graph (a seam for tests to corrupt)."""
    return scale


def _quantized_weights(model: nn.Module) -> list[_QuantizedWeight]:
    """Codes and scale of every quantized compressed weight, checked against the quantizer's output."""
    result = []
    with torch.no_grad():
        for path, p in compressed_weights(model):
            if p.quantizer is not None:
                result.append(_quantize(model, path, p))
    return result


def _quantize(model: nn.Module, path: str, p: CompressedWeight) -> _QuantizedWeight:
    q = p.quantizer
    assert q is not None
    source = f"quantizer {p.quantizer_spec['name']!r}" if p.quantizer_spec else "quantizer"
    w = original(model, path).detach()
    mask = p.mask.detach().to(device=w.device, dtype=torch.bool)
    kept = torch.where(mask, w, w.new_zeros(()))
    codes, scale = checked_codes(q, kept, mask, path, source)

    if scale.numel() == 1:
        flat_scale = scale.reshape(())
    elif w.dim() >= 1 and scale.dim() == w.dim() and scale.shape[0] == w.shape[0] and scale[0].numel() == 1:
        flat_scale = scale.reshape(-1)
    else:
        raise ArtifactError(
            f"{path}: scale of shape {tuple(scale.shape)} is neither per tensor nor per output channel (dim 0); "
            "ONNX export supports those two"
        )
    wide = codes.to(torch.int64)
    lo, hi = (int(wide.min()), int(wide.max())) if wide.numel() else (0, 0)
    qn, qp = getattr(q, "qn", None), getattr(q, "qp", None)
    if isinstance(qn, int) and isinstance(qp, int):  # the grid decides, not the codes it happens to use
        lo, hi = min(lo, -qn), max(hi, qp)
    if lo >= -128 and hi <= 127:
        dtype = torch.int8
    elif lo >= 0 and hi <= 255:
        dtype = torch.uint8
    else:
        raise ArtifactError(f"{path}: codes span [{lo}, {hi}]; ONNX export holds codes of at most 8 bits")
    return _QuantizedWeight(path, wide.to(dtype).cpu(), flat_scale.detach().cpu().clone())


def _prefix(path: str) -> str:
    """Name prefix torch.onnx gives the buffers of the ``_Dequantize`` parametrization at ``path``."""
    module_name, _, attr = path.rpartition(".")
    return f"{module_name}.parametrizations.{attr}.0." if module_name else f"parametrizations.{attr}.0."


def _name_quantized_initializers(proto: Any, quantized: list[_QuantizedWeight]) -> None:
    """Rename ``<module>.parametrizations.<attr>.0.codes`` to ``<path>_quantized`` (and scale, zero point)."""
    renames = {}
    for q in quantized:
        prefix = _prefix(q.path)
        for buffer, suffix in (("codes", "quantized"), ("scale", "scale"), ("zero_point", "zero_point")):
            renames[prefix + buffer] = f"{q.path}_{suffix}"
    graph = proto.graph
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


# --- torch.onnx --------------------------------------------------------------------------------


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ArtifactError(f"ONNX export needs {e.name or 'onnx and onnxruntime'}: {INSTALL_HINT}") from None
    return onnx, onnxruntime


def _as_inputs(example: torch.Tensor | Sequence[torch.Tensor], target: str) -> tuple[torch.Tensor, ...]:
    inputs = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ArtifactError(f"{target}: example_input must be a tensor or a sequence of tensors")
    return tuple(x.detach().cpu() for x in inputs)


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def _output_names(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _torch_export(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    output_dims: list[int],
    opset: int,
    dynamic_batch: bool,
    target: str,
) -> Any:
    import onnx

    input_names, output_names = _input_names(len(inputs)), _output_names(len(output_dims))
    dynamic_axes = None
    if dynamic_batch:
        dims = [x.dim() for x in inputs] + output_dims
        dynamic_axes = {name: {0: "batch"} for name, d in zip(input_names + output_names, dims, strict=True) if d}
    try:
        with tempfile.TemporaryDirectory(prefix="squeezer-onnx-") as tmp, warnings.catch_warnings():
            traced = os.path.join(tmp, "model.onnx")
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                model,
                inputs,
                traced,
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                # PRESERVE (the model is in eval mode) rather than EVAL: EVAL folds BatchNorm into
                # the float weights of a preceding Conv, which would no longer be the student's.
                training=torch.onnx.TrainingMode.PRESERVE,
                # True keeps torch from merging equal initializers behind Identity nodes (zero
                # points of layers of the same width); the inputs are dropped again below.
                keep_initializers_as_inputs=True,
            )
            proto = onnx.load(traced)
    except Exception as e:  # torch raises many types for unsupported operators
        raise ArtifactError(f"{target}: torch.onnx export failed: {_first_line(e)}") from None
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    kept = [x for x in graph.input if x.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    return proto


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --- verification ------------------------------------------------------------------------------


def _check_graph(proto: Any, quantized: list[_QuantizedWeight], target: str) -> None:
    """One DequantizeLinear per quantized weight, reading integer codes initializers of the weight's shape."""
    from onnx import TensorProto

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    dq_inputs = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    count = sum(node.op_type == "DequantizeLinear" for node in graph.node)
    problems = []
    if count != len(quantized):
        problems.append(f"{count} DequantizeLinear nodes for {len(quantized)} quantized weights")
    for q in quantized:
        name = f"{q.path}_quantized"
        init = inits.get(name)
        if name not in dq_inputs or init is None:
            problems.append(f"{q.path} is not read through DequantizeLinear from an initializer")
        elif init.data_type not in (TensorProto.INT8, TensorProto.UINT8) or list(init.dims) != list(q.codes.shape):
            problems.append(f"{name} is not an 8-bit integer tensor of shape {list(q.codes.shape)}")
    if problems:
        raise ArtifactError(f"{target}: ONNX export verification failed: {problems[0]}")


def _check_inputs(inputs: tuple[torch.Tensor, ...], dynamic_batch: bool) -> list[tuple[torch.Tensor, ...]]:
    """The example input, random inputs of its shape, and (with a dynamic batch) its first sample."""
    g = torch.Generator().manual_seed(0)
    checks = [inputs]
    for _ in range(RANDOM_CHECKS):
        checks.append(tuple(_random_like(x, g) for x in inputs))
    if dynamic_batch and all(x.dim() >= 1 and x.shape[0] > 1 for x in inputs):
        checks.append(tuple(x[:1] for x in inputs))
    return checks


def _random_like(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if x.dtype == torch.bool:
        return torch.randint(0, 2, x.shape, generator=g).bool()
    if x.is_floating_point():
        return torch.randn(x.shape, generator=g).to(x.dtype)
    if x.numel() == 0:
        return x.clone()
    lo, hi = int(x.min()), int(x.max())
    return torch.randint(lo, hi + 1, x.shape, generator=g).to(x.dtype)


def _flat_outputs(out: Any, target: str) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, list | tuple):
        return [a for item in out for a in _flat_outputs(item, target)]
    if isinstance(out, dict):
        return [a for item in out.values() for a in _flat_outputs(item, target)]
    raise ArtifactError(f"{target}: model output of type {type(out).__name__} cannot be compared with ONNX")


def _verify(
    ort: Any,
    data: bytes,
    checks: list[tuple[torch.Tensor, ...]],
    expected: list[list[np.ndarray]],
    rtol: float,
    atol: float,
    target: str,
) -> float:
    options = ort.SessionOptions()
    # By default onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits computing with int8
    # activations (accuracy level 4), ~1e-3 off the student; verify the model itself, in float.
    options.add_session_config_entry(ORT_MATMULNBITS_ACCURACY, "1")
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ArtifactError(f"{target}: onnxruntime cannot load the exported model: {_first_line(e)}") from None
    names = [i.name for i in session.get_inputs()]
    max_diff = 0.0
    ok = True
    for inputs, want in zip(checks, expected, strict=True):
        feed = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
        try:
            got = session.run(None, feed)
        except Exception as e:
            raise ArtifactError(f"{target}: onnxruntime failed to run the exported model: {_first_line(e)}") from None
        if len(got) != len(want):
            raise ArtifactError(f"{target}: ONNX export verification failed: {len(got)} outputs, torch has {len(want)}")
        for a, b in zip(got, want, strict=True):
            a = np.asarray(a)
            if a.shape != b.shape:
                raise ArtifactError(
                    f"{target}: ONNX export verification failed: output shape {a.shape}, torch has {b.shape}"
                )
            if a.size == 0:
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            ok = ok and bool(np.isclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True).all())
            both = np.isfinite(a64) & np.isfinite(b64)
            if both.any():
                max_diff = max(max_diff, float(np.abs(a64 - b64)[both].max()))
            if not np.array_equal(np.isfinite(a64), np.isfinite(b64)):
                max_diff = float("inf")
    if not ok:
        raise ArtifactError(
            f"{target}: ONNX export verification failed: max |diff| = {max_diff:.3g} between onnxruntime and "
            f"torch (atol={atol:g}, rtol={rtol:g})"
        )
    return max_diff
