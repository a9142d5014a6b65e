"""Write a compressed model as an artifact (see :mod:`squeezer.artifact.format`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezer import atomic
from squeezer.artifact import format as fmt
from squeezer.artifact.bitpack import MAX_BITS, pack_bits
from squeezer.artifact.codes import checked_codes
from squeezer.artifact.maskcode import encode_mask
from squeezer.artifact.report import ArtifactReport, build_report
from squeezer.compress.model import original
from squeezer.compress.weight import CompressedWeight, compressed_weights, weight_aliases
from squeezer.errors import ArtifactError, PluginError

StrPath = str | os.PathLike[str]


def export(
    model: nn.Module, path: StrPath, *, info: Mapping[str, Any] | None = None, float_dtype: str = "float32"
) -> ArtifactReport:
    """Write the deployable student of ``model`` to ``path`` and return its :class:`ArtifactReport`.

    Compressed, quantized weights are stored as bit-packed codes of their kept positions, a
    coded mask and the scales; compressed, unquantized ones as their kept values (in
    ``float_dtype``) and the mask; every other state entry as it is (floating ones in
    ``float_dtype``: ``"float32"``, the default, is exact for float32 models; ``"float16"``
    halves them). ``info`` (JSON-able) is stored as it is; a key ``"model_factory"``
    (``"pkg.module:function"``) lets :func:`~squeezer.artifact.load` build the model itself.

    The file is written to a temporary file next to ``path`` and moved into place, so ``path``
    holds either its previous content or the whole artifact.
    """
    target = os.fspath(path)
    if float_dtype not in fmt.FLOAT_DTYPES:
        raise ArtifactError(f"{target}: float_dtype must be one of {fmt.FLOAT_DTYPES}, got {float_dtype!r}")
    try:
        info_doc = json.loads(json.dumps(dict(info or {})))
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{target}: info must be JSON-serializable ({e})") from e
    store_dtype = fmt.DTYPES[float_dtype]

    tensors: dict[str, torch.Tensor] = {}
    layers: list[dict[str, Any]] = []
    skip_prefixes: list[str] = []
    aliases = weight_aliases(model)
    with torch.no_grad():
        for p_path, p in compressed_weights(model):
            # a tied weight is stored once: its other paths' state (the same tensors) is skipped too
            skip_prefixes += [_parametrization_prefix(path) for path in (p_path, *aliases.get(p_path, ()))]
            layers.append(_layer(model, p_path, p, tensors, store_dtype))
            if p_path in aliases:
                layers[-1]["aliases"] = list(aliases[p_path])
        activations = _activations(model, tensors, target)
        skip_prefixes += [fmt.activation_prefix(entry["module"]) for entry in activations]
        state = _state(model.state_dict(), skip_prefixes, tensors, store_dtype, target)

    record: dict[str, Any] = {"float_dtype": float_dtype, "info": info_doc, "layers": layers, "state": state}
    if activations:
        record["activations"] = activations
    try:
        fmt.validate(json.loads(json.dumps(record)))  # what we write, we can read
    except ValueError as e:
        raise ArtifactError(f"{target}: {e}") from None
    layout = fmt.parts(record)
    if [(name, fmt.dtype_name(tensors[name].dtype), tuple(tensors[name].shape)) for name, _, _ in layout] != layout:
        raise AssertionError("the parts do not match the record")  # a bug in this module, never the input
    data = fmt.encode(record, (tensors[name] for name, _, _ in layout))
    write_file(target, data)
    nbytes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    meta = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, **record}
    return build_report(target, meta, nbytes, len(data))


def _parametrization_prefix(path: str) -> str:
    """The state-dict prefix of the parametrization at parameter ``path``."""
    module_name, _, attr = path.rpartition(".")
    return f"{module_name}.parametrizations.{attr}." if module_name else f"parametrizations.{attr}."


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).copy())


def _fresh(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy sharing storage with nothing (safetensors refuses shared tensors)."""
    return t.detach().to("cpu", copy=True).contiguous()


def _int_attr(obj: Any, name: str) -> int | None:
    v = getattr(obj, name, None)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        v = int(v.item())
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _layer(
    model: nn.Module,
    path: str,
    p: CompressedWeight,
    tensors: dict[str, torch.Tensor],
    store_dtype: torch.dtype,
) -> dict[str, Any]:
    w = original(model, path).detach()
    mask = p.mask.detach().to(device=w.device, dtype=torch.bool)
    kept = torch.where(mask, w, w.new_zeros(()))
    mask_np = mask.cpu().numpy().reshape(-1)
    nnz = int(mask_np.sum())
    code = encode_mask(mask_np)
    tensors[fmt.layer_key(path, "mask")] = _from_numpy(code.payload)
    entry: dict[str, Any] = {
        "path": path,
        "shape": list(w.shape),
        "dtype": fmt.dtype_name(w.dtype),
        "numel": w.numel(),
        "nnz": nnz,
        "encoding": "float",
        "bits": None,
        "signed": None,
        "qn": None,
        "qp": None,
        "offset": None,
        "mask_coding": code.coding,
        "mask_rice_k": code.rice_k,
        "mask_inverted": code.inverted,
        "mask_bytes": int(code.payload.size),
        "scale_shape": None,
        "scale_dtype": None,
        "quantizer": p.quantizer_spec if p.quantizer is not None else None,
    }
    q = p.quantizer
    if q is None:
        tensors[fmt.layer_key(path, "values")] = _fresh(w[mask].to(store_dtype))
        return entry

    source = f"quantizer {p.quantizer_spec['name']!r}" if p.quantizer_spec else "quantizer"
    bits = _int_attr(q, "bits")
    if bits is None or not 1 <= bits <= MAX_BITS:
        raise ArtifactError(
            f"{path}: {source} has bits={getattr(q, 'bits', None)!r}; artifacts pack 1..{MAX_BITS} bits"
        )
    codes, scale = checked_codes(q, kept, mask, path, source)
    kept_codes = codes[mask]
    kept_np = kept_codes.to(torch.int64).cpu().numpy()
    qn, qp = _int_attr(q, "qn"), _int_attr(q, "qp")
    lo = int(kept_np.min()) if kept_np.size else 0
    if qn is not None:
        offset, signed = qn, qn > 0
    else:
        signed = lo < 0
        offset = 1 << (bits - 1) if signed else 0
    unsigned = kept_np + offset
    if unsigned.size and (int(unsigned.min()) < 0 or int(unsigned.max()) >= 1 << bits):
        raise PluginError(
            f"{source}: codes of {path} span [{lo}, {int(kept_np.max())}], "
            f"which {bits} bits with offset {offset} cannot hold"
        )
    tensors[fmt.layer_key(path, "codes")] = _from_numpy(pack_bits(unsigned, bits))
    tensors[fmt.layer_key(path, "scale")] = _fresh(scale)
    entry.update(encoding="quantized", bits=bits, signed=signed, qn=qn, qp=qp, offset=offset,
                 scale_shape=list(scale.shape), scale_dtype=fmt.dtype_name(scale.dtype))
    return entry


def _activations(model: nn.Module, tensors: dict[str, torch.Tensor], target: str) -> list[dict[str, Any]]:
    """The record entries of the model's activation quantizers (module, grid, step dtype); their
    steps go to ``tensors``. Only squeezer's LSQ activation quantizer is stored (a load recreates it)."""
    from squeezer.engine.activations import LsqActivationQuantizer

    entries = []
    for name, module in model.named_modules():
        q = module._modules.get(fmt.ACTIVATION_CHILD)
        if q is None:
            continue
        where = f"{target}: activation quantizer of {name or 'the model'}"
        if not isinstance(q, LsqActivationQuantizer):
            raise ArtifactError(f"{where}: a {type(q).__name__}, not squeezer's LsqActivationQuantizer; "
                                "an artifact stores only the latter")
        if not bool(q.initialized):
            raise ArtifactError(f"{where}: its step was never initialized (run the model on a batch first)")
        step = q.current_step().detach()  # the value s (log mode too): a load rebuilds a plain-step quantizer
        try:
            dtype = fmt.dtype_name(step.dtype)
        except ValueError as e:
            raise ArtifactError(f"{where}: {e}") from e
        tensors[fmt.activation_key(name)] = _fresh(step.reshape(()))
        entries.append({"module": name, "bits": q.bits, "signed": q.signed, "dtype": dtype})
    return entries


def _state(
    state_dict: Mapping[str, Any],
    skip_prefixes: list[str],
    tensors: dict[str, torch.Tensor],
    store_dtype: torch.dtype,
    target: str,
) -> list[dict[str, Any]]:
    entries = []
    for name, value in state_dict.items():
        if any(name.startswith(prefix) for prefix in skip_prefixes):
            continue  # the unmasked original, the mask and the quantizer's own state are coded above
        if not isinstance(value, torch.Tensor):
            raise ArtifactError(f"{target}: state entry {name!r} is not a tensor ({type(value).__name__})")
        try:
            dtype = fmt.dtype_name(value.dtype)
        except ValueError as e:
            raise ArtifactError(f"{target}: state entry {name!r}: {e}") from e
        stored = value.to(store_dtype) if value.is_floating_point() else value
        tensors[fmt.state_key(name)] = _fresh(stored)
        entries.append({"name": name, "shape": list(value.shape), "dtype": dtype})
    return entries


def write_file(target: str, data: bytes) -> None:
    """Write a file the user keeps atomically (:func:`squeezer.atomic.write_bytes`); a failure is
    an :class:`~squeezer.errors.ArtifactError` naming ``target``."""
    try:
        atomic.write_bytes(target, data)
    except OSError as e:
        raise ArtifactError(f"{target}: cannot write artifact ({e})") from e
