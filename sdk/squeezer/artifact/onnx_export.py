"""Export the student of a compressed model to ONNX, its quantized weights as integer codes.

How: the student is *baked* (a copy whose compressed weights are plain float parameters holding
``Q(W ⊙ M)``), exported in float with torch's current exporter (``torch.onnx.export(...,
dynamo=True)``, i.e. torch.export then onnxscript's torchlib), and the quantization is put in
with a graph pass on the ONNX model (:mod:`squeezer.artifact.onnx_qdq`): each quantized weight's
float initializer becomes its integer codes (INT4 / UINT4 for grids of at most 4 bits from opset
21, else INT8 / UINT8) with a scale and a zero point feeding ``DequantizeLinear``, bitwise the
student's weight. onnxscript's optimizer then folds the exporter's shape arithmetic (it never folds
``DequantizeLinear``). Unquantized (mask-only) weights stay float initializers holding the pruned
zeros; BatchNorm is not folded into a quantized convolution (that would change its weights).

Activation quantizers (a child ``input_quantizer`` with an integer grid ``qn``/``qp`` and a
per-tensor ``scale``, as the LSQ plugin's ``attach_activation_quantizers`` puts on a module)
become ``QuantizeLinear -> DequantizeLinear`` on that module's input (8-bit: UINT8 for an unsigned
grid, INT8 for a signed one), so that onnxruntime can run integer kernels (QLinearConv,
MatMulInteger and their fused forms) where weights and activations are both quantized.

Verification, before the file is moved into place (atomically): the ONNX checker, one
``DequantizeLinear`` per quantized weight reading integer codes, one Q/DQ pair per activation
quantizer, then onnxruntime (:mod:`squeezer.artifact.onnx_verify`, with its one session setting;
a weights-only file also with ``session.disable_quant_qdq = "1"``) against the student's torch
outputs on the example input, on random inputs of its shape and on a batch of one: every element
within ``atol + rtol * |torch|`` (default 1e-5 + 1e-4 |torch|; with activation quantizers
``activation_tolerance`` times the largest |output| instead, since a value on a rounding boundary
may round the other way), and the argmax of every output with a
class axis (last) the same wherever the student's top two values are further apart than twice that.
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from squeezer.artifact import onnx_qdq, onnx_verify
from squeezer.artifact.codes import checked_codes
from squeezer.artifact.onnx_verify import ORT_MATMULNBITS_ACCURACY, SESSION_HINT, first_line
from squeezer.artifact.writer import write_file
from squeezer.compress.model import bake, original
from squeezer.compress.weight import CompressedWeight, compressed_weights, view
from squeezer.errors import ArtifactError

StrPath = str | os.PathLike[str]
ExampleInput = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]

__all__ = ["ORT_MATMULNBITS_ACCURACY", "SESSION_HINT", "OnnxReport", "export_onnx"]

INSTALL_HINT = "pip install 'squeezer[onnx]'"
#: torch's exporter writes opset 18 and later natively
MIN_OPSET = 18
#: 21: DequantizeLinear reads INT4 / UINT4 codes
DEFAULT_OPSET = onnx_qdq.INT4_OPSET
#: random inputs checked besides the example input (and a batch of one)
RANDOM_CHECKS = 2
#: with activation quantizers: the error bound, as a fraction of the largest |student output|
ACTIVATION_TOLERANCE = 0.05
#: the child module name an activation quantizer has on the module whose input it quantizes
ACTIVATION_CHILD = "input_quantizer"


@attrs.frozen
class OnnxReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduced torch."""

    path: str
    opset: int
    #: quantized weights, each stored as integer codes + DequantizeLinear (but ``float_weights``)
    quantized: int
    #: largest |onnxruntime - torch| over every checked input and output
    max_abs_diff: float
    file_bytes: int
    #: quantized weights stored as 4-bit codes (INT4 / UINT4)
    int4: int = 0
    #: activation quantizers written as QuantizeLinear -> DequantizeLinear
    activations: int = 0
    #: the bound max_abs_diff was checked against (elementwise ``atol + rtol * |torch|``)
    atol: float = 0.0
    rtol: float = 0.0
    #: rows whose argmax was compared (those with a clear top value) and how many differ (0)
    argmax_rows: int = 0
    session_hint: str = SESSION_HINT
    #: of the quantized weights, those stored as float values because their layer's input is float
    float_weights: int = 0
    #: of the quantized weights, those an embedding lookup reads as codes (rows gathered, then dequantized)
    gathered_weights: int = 0


def export_onnx(
    model: nn.Module,
    path: StrPath,
    example_input: ExampleInput,
    *,
    opset: int = DEFAULT_OPSET,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    dynamic_batch: bool = True,
    int4: bool | None = None,
    activation_tolerance: float = ACTIVATION_TOLERANCE,
    fold_float_inputs: bool = True,
) -> OnnxReport:
    """Write the student of ``model`` (pruned, quantized) to the ONNX file ``path``, verified.

    ``example_input`` (a tensor, a sequence of tensors for positional inputs, or a mapping of
    keyword inputs such as a Hugging Face model's ``input_ids`` and ``attention_mask``) is what
    the model is exported with. The model itself is left untouched (a deep copy is exported, in
    eval mode). ``dynamic_batch`` makes the first dimension of every input a ``batch`` axis (and
    checks a batch of one); ``int4`` stores codes of at most 4 bits as INT4 / UINT4 (opset >= 21);
    by default (``None``) it does so unless activations are quantized too, since onnxruntime's
    integer kernels (QLinearConv, QGemm) take 8-bit weights only: there 4-bit codes are stored as INT8.
    With activations quantized, ``fold_float_inputs`` stores the weights of layers whose input is
    not quantized (a first layer left in float) as float values, the fastest form for onnxruntime's
    float kernel they run in (:func:`~squeezer.artifact.onnx_qdq.float_input_weights`); ``False``
    keeps their codes (a smaller file).
    Raises :class:`~squeezer.errors.ArtifactError` when onnx, onnxruntime or onnxscript are missing,
    when a weight or an activation quantizer cannot be represented (naming it), when the export
    fails, or when onnxruntime's outputs differ from torch's beyond the bound (see the module
    docstring); ``path`` then keeps its previous content (or stays absent).
    """
    target = os.fspath(path)
    onnx, ort = _import_onnx()
    if opset < MIN_OPSET:
        raise ArtifactError(f"{target}: opset must be at least {MIN_OPSET} (torch's ONNX exporter), got {opset}")
    args, kwargs = _as_inputs(example_input, target)

    student = copy.deepcopy(model).cpu().eval()
    weights = _quantized_weights(student, target)
    acts = _activation_quantizers(student, target)
    checks = _check_inputs(args, kwargs, dynamic_batch)
    with torch.no_grad(), view(student, "student"):
        with _reads_of_compressed_weights(student) as used, _calls(student, acts) as called:
            expected = [_flat_outputs(student(*a, **k), target) for a, k in checks]
        bake(student)
    weights = [q for q in weights if q.path in used]  # a weight the forward never reads is not exported
    acts = {name: a for name, a in acts.items() if name in called}
    for name, a in acts.items():
        student.get_submodule(name).add_module(ACTIVATION_CHILD, _ActivationQDQ(*a))

    proto = _torch_export(student, args, kwargs, opset, dynamic_batch, target)
    try:
        packed = not acts if int4 is None else int4
        types = onnx_qdq.quantize_weights(proto, weights, opset=opset, int4=packed, scales=_graph_scales(weights))
    except ValueError as e:
        raise ArtifactError(f"{target}: {e}") from None
    proto = _optimize(proto, target)
    # integer kernels need Conv -> QuantizeLinear: BatchNorm goes into the quantized weights' scales
    folded = onnx_qdq.prepare_integer(proto, weights) if acts else {}
    # a layer with a float input runs a float kernel: its weight is faster as a float constant
    floats = onnx_qdq.float_input_weights(proto, weights) if acts and fold_float_inputs else {}
    # an embedding lookup reads a few rows: gather them from the codes, not from the dequantized table
    gathered = onnx_qdq.gathered_weights(proto, weights)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ArtifactError(f"{target}: exported ONNX model is invalid: {first_line(e)}") from None
    problems = onnx_qdq.check_weights(proto, weights, types, folded, floats, gathered)
    pairs = onnx_qdq.activation_pairs(proto)
    if pairs != len(acts):
        problems.append(f"{pairs} QuantizeLinear/DequantizeLinear pairs for {len(acts)} activation quantizers")
    if problems:
        raise ArtifactError(f"{target}: ONNX export verification failed: {problems[0]}")
    data = proto.SerializeToString()
    if acts:
        peak = max((float(np.abs(a).max()) for out in expected for a in out if a.size and a.dtype.kind == "f"),
                   default=0.0)
        rtol, atol = 0.0, max(atol, activation_tolerance * peak)
    agreement = _verify(ort, proto, data, checks, expected, rtol, atol, target, bool(acts))
    write_file(target, data)
    int4_count = sum(t in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) for t in types.values())
    hint = SESSION_HINT if acts or not weights else onnx_verify.WEIGHTS_ONLY_HINT
    return OnnxReport(target, opset, len(weights), agreement.max_abs_diff, len(data), int4_count, len(acts),
                      atol, rtol, agreement.argmax_rows, hint, len(floats), len(gathered))


# --- quantized weights -------------------------------------------------------------------------


def _graph_scales(weights: list[onnx_qdq.QuantizedWeight]) -> dict[str, np.ndarray]:
    """The scales written to the graph (a seam for tests to corrupt)."""
    return {q.path: q.scale for q in weights}


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


def _quantized_weights(model: nn.Module, target: str) -> list[onnx_qdq.QuantizedWeight]:
    """Codes and scale of every quantized compressed weight, checked against the quantizer's output."""
    result = []
    with torch.no_grad():
        for path, p in compressed_weights(model):
            if p.quantizer is not None:
                result.append(_quantize(model, path, p, target))
    return result


def _quantize(model: nn.Module, path: str, p: CompressedWeight, target: str) -> onnx_qdq.QuantizedWeight:
    q = p.quantizer
    assert q is not None
    source = f"quantizer {p.quantizer_spec['name']!r}" if p.quantizer_spec else "quantizer"
    w = original(model, path).detach()
    mask = p.mask.detach().to(device=w.device, dtype=torch.bool)
    kept = torch.where(mask, w, w.new_zeros(()))
    codes, scale = checked_codes(q, kept, mask, path, source)
    student = p(w).detach()

    if scale.numel() == 1:
        flat_scale = scale.reshape(())
    elif w.dim() >= 1 and scale.dim() == w.dim() and scale.shape[0] == w.shape[0] and scale[0].numel() == 1:
        flat_scale = scale.reshape(-1)
    else:
        raise ArtifactError(
            f"{target}: {path}: scale of shape {tuple(scale.shape)} is neither per tensor nor per output channel "
            "(dim 0); ONNX export supports those two"
        )
    if student.dtype != torch.float32:
        raise ArtifactError(f"{target}: {path}: ONNX export writes float32 weights, this one is {student.dtype}")
    wide = codes.to(torch.int64)
    lo, hi = (int(wide.min()), int(wide.max())) if wide.numel() else (0, 0)
    qn, qp = getattr(q, "qn", None), getattr(q, "qp", None)
    if isinstance(qn, int) and isinstance(qp, int):  # the grid decides, not the codes it happens to use
        lo, hi = min(lo, -qn), max(hi, qp)
    if not (lo >= -128 and hi <= 127) and not (lo >= 0 and hi <= 255):
        raise ArtifactError(f"{target}: {path}: codes span [{lo}, {hi}]; ONNX export holds codes of at most 8 bits")
    return onnx_qdq.QuantizedWeight(
        path, student.cpu().numpy(), wide.cpu().numpy().astype(np.int16),
        flat_scale.detach().cpu().to(torch.float32).numpy(), lo, hi,
    )


# --- activation quantizers ---------------------------------------------------------------------


def _activation_quantizers(model: nn.Module, target: str) -> dict[str, tuple[float, int, int]]:
    """``module name -> (scale, qn, qp)`` of every activation quantizer (``input_quantizer`` child)."""
    found = {}
    for name, module in model.named_modules():
        q = module._modules.get(ACTIVATION_CHILD)
        if q is None:
            continue
        where = f"{target}: activation quantizer of {name or 'the model'}"
        qn, qp = getattr(q, "qn", None), getattr(q, "qp", None)
        if not (isinstance(qn, int) and isinstance(qp, int) and callable(getattr(q, "scale", None))):
            raise ArtifactError(f"{where}: not a grid quantizer (integer qn, qp and a scale()); cannot export it")
        if getattr(q, "per_channel", False):
            raise ArtifactError(f"{where}: per-channel activation quantization is not supported (per tensor only)")
        if (qn, qp) != (0, 255) and not (0 <= qn <= 128 and 0 <= qp <= 127) and not (qn == 0 and qp <= 255):
            raise ArtifactError(f"{where}: grid [-{qn}, {qp}] does not fit 8 bits")
        initialized = getattr(q, "initialized", None)
        if isinstance(initialized, torch.Tensor) and not bool(initialized):
            raise ArtifactError(f"{where}: its step was never initialized (run the model on a batch first)")
        with torch.no_grad():
            s = q.scale(torch.zeros(1, 1))
        if not isinstance(s, torch.Tensor) or s.numel() != 1:
            raise ArtifactError(f"{where}: scale must be one value (per tensor)")
        found[name] = (float(s.reshape(()).to(torch.float32)), qn, qp)
    return found


@contextmanager
def _calls(model: nn.Module, acts: Mapping[str, Any]) -> Iterator[set[str]]:
    """Within the block, collect the names of the modules whose activation quantizer runs."""
    called: set[str] = set()
    handles = [model.get_submodule(name).get_submodule(ACTIVATION_CHILD).register_forward_hook(
        lambda *_, name=name: called.add(name)) for name in acts]
    try:
        yield called
    finally:
        for handle in handles:
            handle.remove()


class _ActivationQDQ(nn.Module):
    """Stands for an activation quantizer in the exported program: ``squeezer::activation_qdq``."""

    def __init__(self, scale: float, qn: int, qp: int) -> None:
        super().__init__()
        self.s, self.qn, self.qp = scale, qn, qp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _activation_op()(x, self.s, self.qn, self.qp)
        return out


def _activation_op() -> Any:
    """The torch custom op ``squeezer::activation_qdq(x, scale, qn, qp)`` (registered once)."""
    if not hasattr(torch.ops.squeezer, "activation_qdq"):

        @torch.library.custom_op("squeezer::activation_qdq", mutates_args=())
        def activation_qdq(x: torch.Tensor, scale: float, qn: int, qp: int) -> torch.Tensor:
            return torch.clamp(x / scale, -qn, qp).round() * scale

        @activation_qdq.register_fake
        def _(x: torch.Tensor, scale: float, qn: int, qp: int) -> torch.Tensor:
            return torch.empty_like(x)

    return torch.ops.squeezer.activation_qdq.default


# --- torch.onnx --------------------------------------------------------------------------------


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as e:
        needs = e.name or "onnx, onnxruntime and onnxscript"
        raise ArtifactError(f"ONNX export needs {needs}: {INSTALL_HINT}") from None
    return onnx, onnxruntime


def _as_inputs(example: ExampleInput, target: str) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    if isinstance(example, Mapping):
        kwargs = dict(example)
        if not kwargs or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in kwargs.items()):
            raise ArtifactError(f"{target}: example_input must be a tensor, a sequence of tensors or a mapping "
                                "of names to tensors")
        return (), {k: v.detach().cpu() for k, v in kwargs.items()}
    inputs = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ArtifactError(f"{target}: example_input must be a tensor, a sequence of tensors or a mapping "
                            "of names to tensors")
    return tuple(x.detach().cpu() for x in inputs), {}


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def _dynamic_shapes(model: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor]) -> Any:
    """A dynamic first dimension for every input of at least one dimension, by forward parameter name."""
    batch = torch.export.Dim.AUTO
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    shapes: dict[str, Any] = {}
    for name, value in bound.items():
        if isinstance(value, torch.Tensor):
            shapes[name] = {0: batch} if value.dim() else None
        elif isinstance(value, tuple):  # *args
            shapes[name] = tuple({0: batch} if x.dim() else None for x in value)
        elif isinstance(value, dict):  # **kwargs
            shapes[name] = {k: ({0: batch} if x.dim() else None) for k, x in value.items()}
    return shapes


def _torch_export(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    kwargs: dict[str, torch.Tensor],
    opset: int,
    dynamic_batch: bool,
    target: str,
) -> Any:
    import logging

    table = {_activation_op(): onnx_qdq.activation_translation(opset)}
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            program = torch.onnx.export(
                model,
                args,
                kwargs=kwargs or None,
                dynamo=True,
                opset_version=opset,
                input_names=_input_names(len(args)) if args else None,
                dynamic_shapes=_dynamic_shapes(model, args, kwargs) if dynamic_batch else None,
                custom_translation_table=table,
                # the optimizer would fold BatchNorm and transposes into the float weights before
                # they are quantized; it runs after the QDQ pass instead (_optimize)
                optimize=False,
                verbose=False,
            )
    except Exception as e:  # torch raises many types for unsupported operators
        raise ArtifactError(f"{target}: torch.onnx export failed: {_export_error(e)}") from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    if program is None:
        raise ArtifactError(f"{target}: torch.onnx export returned no program")
    proto = program.model_proto
    _name_batch(proto, dynamic_batch)
    return proto


def _export_error(e: BaseException) -> str:
    """The innermost cause of an exporter error (its own message is a page of next steps)."""
    inner: BaseException = e
    while inner.__cause__ is not None:
        inner = inner.__cause__
    return f"{type(inner).__name__}: {first_line(inner)}"


def _name_batch(proto: Any, dynamic_batch: bool) -> None:
    """Call the symbolic first dimension of every graph input and output ``batch``."""
    if not dynamic_batch:
        return
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_param = "batch"


def _optimize(proto: Any, target: str) -> Any:
    """Fold the exporter's constant subgraphs (shape arithmetic, transposes of float weights) and
    drop dead nodes, with onnxscript's constant folder (which never folds DequantizeLinear). Its
    rewrite rules are left out: they would fold BatchNorm into the float weights of a convolution,
    which would no longer be the student's (onnxruntime fuses it when it loads the model)."""
    import logging

    import onnx_ir
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer

    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = onnx_ir.serde.deserialize_model(proto)
        onnxscript.optimizer.fold_constants(model)
        for step in (passes.RemoveUnusedNodesPass(), passes.LiftConstantsToInitializersPass(),
                     passes.RemoveUnusedOpsetsPass()):
            model = step(model).model
        optimized = onnx_ir.serde.serialize_model(model)
    except Exception as e:
        raise ArtifactError(f"{target}: ONNX optimizer failed: {_export_error(e)}") from None
    finally:
        quiet.setLevel(level)
    # the exporter records each node's stack trace and module path: most of a small model's bytes
    for node in optimized.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*optimized.graph.value_info, *optimized.graph.input, *optimized.graph.output]:
        del value.metadata_props[:]
    return optimized


# --- verification ------------------------------------------------------------------------------


Check = tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]


def _check_inputs(args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor], dynamic_batch: bool) -> list[Check]:
    """The example input, random inputs of its shape, and (with a dynamic batch) its first sample."""
    g = torch.Generator().manual_seed(0)
    checks: list[Check] = [(args, kwargs)]
    for _ in range(RANDOM_CHECKS):
        checks.append((tuple(_random_like(x, g) for x in args), {k: _random_like(x, g) for k, x in kwargs.items()}))
    every = [*args, *kwargs.values()]
    if dynamic_batch and all(x.dim() >= 1 and x.shape[0] > 1 for x in every):
        checks.append((tuple(x[:1] for x in args), {k: x[:1] for k, x in kwargs.items()}))
    return checks


def _random_like(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if x.dtype == torch.bool:
        return torch.randint(0, 2, x.shape, generator=g).bool()
    if x.is_floating_point():
        return torch.randn(x.shape, generator=g).to(x.dtype)
    if x.numel() == 0:
        return x.clone()
    lo, hi = int(x.min()), int(x.max())
    if lo == hi:  # an all-ones attention mask, say: keep it
        return x.clone()
    return torch.randint(lo, hi + 1, x.shape, generator=g).to(x.dtype)


def _flat_outputs(out: Any, target: str) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if out is None:
        return []
    if isinstance(out, list | tuple):
        return [a for item in out for a in _flat_outputs(item, target)]
    if isinstance(out, dict):
        return [a for item in out.values() for a in _flat_outputs(item, target)]
    raise ArtifactError(f"{target}: model output of type {type(out).__name__} cannot be compared with ONNX")


def _verify(
    ort: Any,
    proto: Any,
    data: bytes,
    checks: list[Check],
    expected: list[list[np.ndarray]],
    rtol: float,
    atol: float,
    target: str,
    activations: bool,
) -> onnx_verify.Agreement:
    names = [i.name for i in proto.graph.input]
    feeds = []
    for args, kwargs in checks:
        positional = [n for n in names if n not in kwargs]
        if len(positional) != len(args):
            raise ArtifactError(f"{target}: ONNX export verification failed: the graph's inputs "
                                f"({', '.join(names)}) are not the example's {len(args) + len(kwargs)}")
        feed = dict(zip(positional, args, strict=True))
        feed.update({k: v for k, v in kwargs.items() if k in names})
        feeds.append({name: x.numpy() for name, x in feed.items()})
    sessions: list[dict[str, str]] = [{}]
    if not activations:  # a weights-only file also runs with QDQ handling off (weights folded at load)
        sessions.append({onnx_verify.ORT_DISABLE_QDQ: "1"})
    worst = None
    for config in sessions:
        try:
            agreement = onnx_verify.compare(ort, data, feeds, expected, rtol, atol, config)
        except onnx_verify.VerificationError as e:
            raise ArtifactError(f"{target}: ONNX export verification failed: {e}") from None
        setting = f" (with {', '.join(f'{k}={v}' for k, v in config.items())})" if config else ""
        if not agreement.within or agreement.argmax_mismatches:
            argmax = (f"; argmax differs on {agreement.argmax_mismatches} of {agreement.argmax_rows} rows"
                      if agreement.argmax_mismatches else "")
            raise ArtifactError(
                f"{target}: ONNX export verification failed: max |diff| = {agreement.max_abs_diff:.3g} between "
                f"onnxruntime{setting} and torch (atol={atol:g}, rtol={rtol:g}){argmax}"
            )
        if worst is None or agreement.max_abs_diff > worst.max_abs_diff:
            worst = agreement
    assert worst is not None
    return worst
