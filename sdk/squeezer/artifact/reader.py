"""Read, verify and decode an artifact (see :mod:`squeezer.artifact.format`).

Reading never unpickles and never executes anything from the file: the container is
safetensors (a JSON header and raw tensor bytes), the record zlib-compressed JSON inflated within
a fixed bound, and everything is checked (format, version, checksum, record schema, part
sizes) before use. Any problem is an
:class:`~squeezer.errors.ArtifactError` naming the file.

A file may *name* a model factory (``info["model_factory"]``) for :func:`load` to build the model
with; it is imported and called only if the user trusts it (:mod:`squeezer.trust`), since the
checksum proves integrity, not origin: anyone can edit the record and recompute it.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from squeezer import safefile
from squeezer.artifact import format as fmt
from squeezer.artifact.bitpack import packed_size, unpack_bits
from squeezer.artifact.maskcode import MaskCode, MaskCodeError, decode_mask
from squeezer.compress.weight import compressed_weights
from squeezer.errors import ArtifactError, TargetError
from squeezer.factories import build_module
from squeezer.recipe.configs import Factory
from squeezer.trust import Trust, merged

StrPath = str | os.PathLike[str]


@attrs.frozen
class Artifact:
    """A read and verified artifact: its record and its (still coded) parts.

    ``meta`` is the record with the header's ``format`` and ``version``; ``tensors`` holds the
    parts under the names ``layer/<path>/<part>`` and ``state/<name>`` (see
    :mod:`squeezer.artifact.format`); ``file_bytes`` is the size of the whole file."""

    path: str
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    file_bytes: int

    @property
    def nbytes(self) -> dict[str, int]:
        return {name: t.numel() * t.element_size() for name, t in self.tensors.items()}


def read(path: StrPath) -> Artifact:
    """Open ``path``, check format, version, layout and checksum; return the coded content.

    Before a byte of ``data`` is read: the file must be a regular file (a FIFO or device is
    refused at once), its safetensors header consistent with its size and free of unsupported
    dtypes (:func:`squeezer.safefile.open_safetensors`), its metadata of this format and version,
    and it must hold exactly the one ``data`` tensor (:func:`.format.check_tensors`). The checksum
    is then computed streaming from the file; only a verified file's ``data`` is read, its record
    inflated within :data:`~squeezer.artifact.format.MAX_RECORD_BYTES`, validated, and the parts it
    describes checked to fill the rest exactly before they are sliced.
    """
    target = os.fspath(path)
    if not os.path.lexists(target):
        raise ArtifactError(f"{target}: no such artifact file")
    with safefile.open_safetensors(target, "artifact") as st:
        header = _metadata(target, st.metadata)
        try:
            fmt.check_tensors({name: (e.dtype, e.shape) for name, e in st.tensors.items()})
        except ValueError as e:
            raise ArtifactError(f"{target}: {e}") from None
        if not hmac.compare_digest(fmt.file_digest(st), header["sha256"]):
            raise ArtifactError(f"{target}: checksum mismatch: the file is corrupt or was modified")
        data = st.tensor(st.tensors[fmt.DATA_KEY])
        size = st.size
    try:
        record, start = fmt.decompress_record(memoryview(data.numpy()))
        fmt.validate(record)
        fmt.check_parts(record, data.numel() - start)
    except ValueError as e:  # includes json.JSONDecodeError
        raise ArtifactError(f"{target}: {e}") from None
    meta = {"format": header["format"], "version": header["version"], **record}
    return Artifact(target, meta, fmt.split(record, data[start:]), size)


def _metadata(target: str, raw: Mapping[str, str] | None) -> dict[str, Any]:
    if not raw or fmt.METADATA_KEY not in raw:
        raise ArtifactError(f"{target}: not a squeezer artifact (no {fmt.METADATA_KEY!r} metadata)")
    unknown = sorted(set(raw) - {fmt.METADATA_KEY})
    if unknown:
        raise ArtifactError(f"{target}: unknown metadata key(s) {', '.join(map(repr, unknown))}")
    try:
        doc = json.loads(raw[fmt.METADATA_KEY])
        return fmt.validate_header(doc)
    except ValueError as e:  # includes json.JSONDecodeError
        raise ArtifactError(f"{target}: {e}") from e
    except RecursionError:
        raise ArtifactError(f"{target}: the metadata nests too deeply") from None


def decode_layer(art: Artifact, layer: Mapping[str, Any]) -> torch.Tensor:
    """The dense student weight ``Q(W ⊙ M)`` of one layer entry (zeros at pruned positions)."""
    p = layer["path"]
    where = f"{art.path}: layer {p}"
    numel, nnz, shape = layer["numel"], layer["nnz"], tuple(layer["shape"])
    dtype = fmt.DTYPES[layer["dtype"]]
    mask_t = _bytes_tensor(art, fmt.layer_key(p, "mask"), where)
    code = MaskCode(layer["mask_coding"], mask_t.numpy(), layer["mask_rice_k"], layer["mask_inverted"])
    try:
        mask = torch.from_numpy(decode_mask(code, numel, nnz).copy())
    except MaskCodeError as e:
        raise ArtifactError(f"{where}: corrupt mask ({e})") from e
    if layer["encoding"] == "float":
        values = art.tensors[fmt.layer_key(p, "values")]
        if values.dtype != fmt.DTYPES[art.meta["float_dtype"]] or tuple(values.shape) != (nnz,):
            raise ArtifactError(f"{where}: values must be {art.meta['float_dtype']} of shape ({nnz},)")
        flat = torch.zeros(numel, dtype=dtype)
        flat[mask] = values.to(dtype)
        return flat.reshape(shape)
    bits = layer["bits"]
    codes_t = _bytes_tensor(art, fmt.layer_key(p, "codes"), where)
    if codes_t.numel() != packed_size(nnz, bits):
        raise ArtifactError(f"{where}: codes hold {codes_t.numel()} bytes, {packed_size(nnz, bits)} expected")
    scale = art.tensors[fmt.layer_key(p, "scale")]
    if not scale.is_floating_point():
        raise ArtifactError(f"{where}: scale must be a floating tensor, got {scale.dtype}")
    try:
        if torch.broadcast_shapes(scale.shape, shape) != torch.Size(shape):
            raise RuntimeError("broadcasting changes the shape")
    except RuntimeError as e:
        raise ArtifactError(f"{where}: scale of shape {tuple(scale.shape)} does not fit {shape}") from e
    kept = unpack_bits(codes_t.numpy(), bits, nnz) - layer["offset"]
    codes = torch.zeros(numel, dtype=scale.dtype)
    codes[mask] = torch.from_numpy(kept.astype(np.float64)).to(scale.dtype)
    codes = codes.reshape(shape)
    # the same product as the quantizer's forward, then exact zeros where pruned
    student = torch.where(mask.reshape(shape), codes * scale, torch.zeros((), dtype=scale.dtype))
    return student.to(dtype)


def _bytes_tensor(art: Artifact, key: str, where: str) -> torch.Tensor:
    t = art.tensors[key]
    if t.dtype != torch.uint8 or t.dim() != 1:
        raise ArtifactError(f"{where}: {key} must be a 1-d uint8 tensor")
    return t


def decode_state(art: Artifact, entry: Mapping[str, Any]) -> torch.Tensor:
    """One stored state entry, in its original dtype."""
    t = art.tensors[fmt.state_key(entry["name"])]
    dtype = fmt.DTYPES[entry["dtype"]]
    stored = fmt.DTYPES[art.meta["float_dtype"]] if dtype.is_floating_point else dtype
    if t.dtype != stored or list(t.shape) != entry["shape"]:
        raise ArtifactError(f"{art.path}: state {entry['name']} must be {stored} of shape {entry['shape']}")
    return t.to(dtype)


# Without a model to compare shapes with, what a file may decode to is bounded. A mask coded at
# 99.9% sparsity plus 1-4 bit codes costs ~12-16 bits per kept weight, i.e. ~1000 FP32 weights
# (32,000 bits) in 10-30 bits: legitimate artifacts compress at most ~3000x against FP32. So: a
# fixed allowance that lets any small model (64 Mi FP32 values) load whatever its compression
# (even fully pruned layers), plus 10,000x the file size, 3x beyond the best real compression.
# A 10 KB file claiming 2**31 weights (8 GiB) is refused; with a model (load(path, model)),
# check_fits compares every shape with the model's instead, and no bound is needed.
DECODE_ALLOWANCE = 256 << 20
DECODE_PER_FILE_BYTE = 10_000


def decode_limit(file_bytes: int) -> int:
    """The most bytes an artifact of ``file_bytes`` may decode to without a model."""
    return DECODE_ALLOWANCE + DECODE_PER_FILE_BYTE * file_bytes


def check_decoded_size(art: Artifact) -> None:
    """Raise unless decoding ``art`` stays within :func:`decode_limit` of its file size; reads only
    the metadata, so nothing the file claims is allocated."""
    limit, total = decode_limit(art.file_bytes), 0
    for name, nbytes in fmt.decoded_bytes(art.meta):
        total += nbytes
        if total > limit:
            raise ArtifactError(
                f"{art.path}: {name} would decode to {nbytes:,} bytes, which brings this {art.file_bytes:,}-byte "
                f"artifact past the {limit:,} bytes it may decode to without a model; pass the model "
                "(squeezer.load(path, model)) so the shapes are checked against it"
            )


def load_state_dict(path: StrPath) -> dict[str, torch.Tensor]:
    """The student's plain state dict (dequantized weights under their parameter paths).

    Without a model the decoded size is bounded by the file's (see :func:`decode_limit`).
    """
    art = read(path)
    check_decoded_size(art)
    return _state_dict(art)


def _state_dict(art: Artifact) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for layer in art.meta["layers"]:
        weight = decode_layer(art, layer)
        out.update(dict.fromkeys((layer["path"], *layer.get("aliases", ())), weight))
    out.update({entry["name"]: decode_state(art, entry) for entry in art.meta["state"]})
    for act in art.meta.get("activations", ()):
        out.update(fmt.activation_state(act, art.tensors[fmt.activation_key(act["module"])]))
    return out


def _restore_activations(art: Artifact, model: nn.Module) -> None:
    """Recreate on ``model`` the activation quantizers the artifact records (their steps are loaded next)."""
    from squeezer.engine.activations import restore_activations

    for act in art.meta.get("activations", ()):
        try:
            restore_activations(model, {act["module"]: (act["bits"], act["signed"])}, fmt.DTYPES[act["dtype"]])
        except ValueError as e:
            raise ArtifactError(f"{art.path}: artifact does not fit the model ({e})") from None


def load(path: StrPath, model: nn.Module | None = None, *, trust: Trust | Iterable[str] | None = None) -> nn.Module:
    """Load an artifact into ``model`` (a fresh, uncompressed instance of the architecture).

    The compressed weights become plain weights holding the student ``Q(W ⊙ M)`` (codes times
    scale at the kept positions, zeros elsewhere); the rest of the state is loaded as stored.
    Returns the model in eval mode. Without ``model``, the factory the artifact's
    ``info["model_factory"]`` names is called to build one, but only if it is trusted: squeezer's
    bundled examples, ``SQUEEZER_TRUST_FACTORIES`` or the patterns in ``trust`` (see
    :mod:`squeezer.trust`); the model is checked against the file before it is allocated.
    """
    art = read(path)
    return load_into(art, _from_factory(art, merged(trust)) if model is None else model)


def load_into(art: Artifact, model: nn.Module) -> nn.Module:
    """Load a read artifact into ``model`` (see :func:`load`)."""
    if any(True for _ in compressed_weights(model)):
        raise ArtifactError(
            f"{art.path}: load into a freshly constructed, uncompressed model "
            "(this one has compressed weights)"
        )
    check_fits(art, model)
    _restore_ties(art, model)
    _restore_activations(art, model)
    try:
        model.load_state_dict(_state_dict(art), strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{art.path}: cannot load into the model ({e})") from e
    return model.eval()


def _restore_ties(art: Artifact, model: nn.Module) -> None:
    """Tie the paths of each tied layer to one parameter (a fresh model usually ties them itself),
    and refuse a model that ties stored layers the artifact keeps apart: loading would put two
    weights into one parameter."""
    from squeezer.compress.model import parameter_paths, tie
    from squeezer.compress.targets import get_submodule_and_attr

    for layer in art.meta["layers"]:
        aliases = layer.get("aliases", [])
        try:
            tie(model, layer["path"], aliases)
        except TargetError as e:
            raise ArtifactError(f"{art.path}: artifact does not fit the model ({e})") from None
        module, attr = get_submodule_and_attr(model, layer["path"])
        held = parameter_paths(model, getattr(module, attr))
        extra = sorted(set(held) - {layer["path"], *aliases})
        if extra:
            raise ArtifactError(f"{art.path}: the model ties {layer['path']} to {', '.join(extra)}, which the "
                                "artifact stores apart; build the model it was written from")


def check_fits(art: Artifact, model: nn.Module) -> None:
    """Raise unless the artifact claims exactly ``model``'s state (names and shapes); reads only
    the metadata, so a file claiming huge layers is refused before anything is allocated. The
    activation quantizers it records are not compared: :func:`load_into` adds them to the model."""
    claimed = {path: tuple(layer["shape"]) for layer in art.meta["layers"]
               for path in (layer["path"], *layer.get("aliases", ()))}
    claimed.update({entry["name"]: tuple(entry["shape"]) for entry in art.meta["state"]})
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for act in art.meta.get("activations", ()):
        if act["module"] not in dict(model.named_modules()):
            raise ArtifactError(f"{art.path}: artifact does not fit the model (it quantizes the input of "
                                f"{act['module']!r}, which the model lacks)")
    missing, unexpected = sorted(set(own) - set(claimed)), sorted(set(claimed) - set(own))
    if missing or unexpected:
        raise ArtifactError(
            f"{art.path}: artifact does not fit the model "
            f"(missing in artifact: {missing}, not in model: {unexpected})"
        )
    for name, shape in claimed.items():
        if own[name] != shape:
            raise ArtifactError(f"{art.path}: {name} has shape {shape} in the artifact, {own[name]} in the model")


def _from_factory(art: Artifact, trust: Trust) -> nn.Module:
    factory = art.meta["info"].get("model_factory")
    if factory is None:
        raise ArtifactError(
            f"{art.path}: a model is needed: pass load(path, model=...) or export with "
            "info={'model_factory': 'pkg.module:function'}"
        )
    options = art.meta["info"].get("model_options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ArtifactError(f"{art.path}: info.model_options must be a table, got {type(options).__name__}")
    try:
        named = Factory(factory=factory, options=options)
    except (TypeError, ValueError):
        raise ArtifactError(f"{art.path}: info.model_factory must be 'pkg.module:function', got {factory!r}") from None
    return build_module(named, "info.model_factory", trust, art.path,
                        lambda shell: check_fits(art, shell))
