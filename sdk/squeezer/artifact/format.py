"""The artifact layout (format ``squeezer-artifact``, version 1): tensor names, metadata schema, checksum.

An artifact is a safetensors file. Its ``__metadata__`` holds exactly one key, ``"squeezer"``,
whose value is a JSON document::

    {"format": "squeezer-artifact", "version": 1, "info": {...}, "float_dtype": "float32",
     "layers": [LAYER, ...], "state": [STATE, ...],
     "checksum": {"algorithm": "sha256", "digest": "<hex>"}}

A ``LAYER`` (one compressed weight, the student ``Q(W ⊙ M)``) has the fields of
:data:`LAYER_FIELDS`; its tensors are

- ``layer/<path>/mask``: the mask, coded as ``mask_coding`` says (:mod:`.maskcode`);
- ``encoding == "quantized"``: ``layer/<path>/codes``, the integer codes of the kept positions
  in flat order, ``code + offset`` packed in ``bits`` bits (:mod:`.bitpack`, ``offset = qn``),
  and ``layer/<path>/scale``, the step size(s), broadcastable to ``shape``;
- ``encoding == "float"`` (masked, not quantized): ``layer/<path>/values``, the kept values.

A ``STATE`` entry (``name``, ``shape``, ``dtype``) is any other entry of the model's state dict,
stored as ``state/<name>`` (floating tensors in ``float_dtype``, the rest as they are).

The checksum is SHA-256 over the metadata document without its ``checksum`` field (canonical
JSON) and then, for every tensor in name order, its name, dtype, shape and bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

from squeezer.safefile import SafetensorsFile

FORMAT_NAME = "squeezer-artifact"
FORMAT_VERSION = 1
METADATA_KEY = "squeezer"
CHECKSUM_ALGORITHM = "sha256"

TOP_FIELDS = frozenset({"format", "version", "info", "float_dtype", "layers", "state", "checksum"})
LAYER_FIELDS = frozenset(
    {
        "path",
        "shape",
        "dtype",
        "numel",
        "nnz",
        "encoding",
        "bits",
        "signed",
        "qn",
        "qp",
        "offset",
        "mask_coding",
        "mask_rice_k",
        "mask_inverted",
        "quantizer",
    }
)
STATE_FIELDS = frozenset({"name", "shape", "dtype"})
CHECKSUM_FIELDS = frozenset({"algorithm", "digest"})
ENCODINGS = ("quantized", "float")
MAX_DIMS = 64
MAX_NUMEL = 1 << 48  # far beyond any real layer; keeps the mask decoder's int64 arithmetic exact
FLOAT_DTYPES = ("float32", "float16")

# Tensor dtypes an artifact may name (a whitelist: names are never looked up on torch blindly).
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"dtype {dtype} cannot be stored in an artifact")
    return name


def layer_key(path: str, part: str) -> str:
    return f"layer/{path}/{part}"


def state_key(name: str) -> str:
    return f"state/{name}"


def expected_keys(meta: Mapping[str, Any]) -> set[str]:
    """The tensor names a (validated) metadata document says the file holds."""
    keys: set[str] = set()
    for layer in meta["layers"]:
        parts = ("mask", "codes", "scale") if layer["encoding"] == "quantized" else ("mask", "values")
        keys.update(layer_key(layer["path"], part) for part in parts)
    keys.update(state_key(s["name"]) for s in meta["state"])
    return keys


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().cpu().contiguous().reshape(-1)
    if not flat.numel():
        return memoryview(b"")
    array: Any = flat.view(torch.uint8).numpy()  # a buffer; numpy's stubs do not say so
    return memoryview(array)


def _hasher(meta: Mapping[str, Any]) -> Any:
    h = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "checksum"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h


def _tensor_header(name: str, dtype: str, shape: list[int]) -> bytes:
    return f"\0{name}\0{dtype}\0{shape}\0".encode()


def checksum(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the metadata (without ``checksum``) and all tensors in canonical order."""
    h = _hasher(meta)
    for name in sorted(tensors):
        t = tensors[name]
        h.update(_tensor_header(name, dtype_name(t.dtype), list(t.shape)))
        h.update(_tensor_bytes(t))
    return str(h.hexdigest())


def file_checksum(meta: Mapping[str, Any], st: SafetensorsFile) -> str:
    """:func:`checksum` of the tensors of an open file, streamed from it (memory: one chunk)."""
    h = _hasher(meta)
    for name in sorted(st.tensors):
        entry = st.tensors[name]
        h.update(_tensor_header(name, entry.dtype, list(entry.shape)))
        for block in st.chunks(entry):
            h.update(block)
    return str(h.hexdigest())


# --- schema validation (raises ValueError with the field at fault; the reader adds the file) ---


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fields(obj: Any, expected: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a JSON object")
    unknown = sorted(set(obj) - expected)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
    missing = sorted(expected - set(obj))
    if missing:
        raise ValueError(f"{where} lacks field(s) {', '.join(map(repr, missing))}")
    return obj


def _shape(v: Any, where: str) -> list[int]:
    if not isinstance(v, list) or len(v) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in v):
        raise ValueError(f"{where} must be a list of at most {MAX_DIMS} non-negative integers")
    return v


def _opt_int(v: Any, where: str) -> None:
    if v is not None and not _is_int(v):
        raise ValueError(f"{where} must be an integer or null")


def check_version(doc: Any) -> None:
    """Check format name and version first, so a newer file reports its version, not its fields."""
    if not isinstance(doc, dict):
        raise ValueError("metadata must be a JSON object")
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"not a {FORMAT_NAME} file (format field is {doc.get('format')!r})")
    version = doc.get("version")
    if version != FORMAT_VERSION or not _is_int(version):
        raise ValueError(
            f"artifact format version {version} is not supported (this squeezer reads {FORMAT_VERSION})"
        )


def validate(doc: Any) -> dict[str, Any]:
    """Check a metadata document against the version-1 schema; return it."""
    check_version(doc)
    _fields(doc, TOP_FIELDS, "metadata")
    if not isinstance(doc["info"], dict):
        raise ValueError("metadata.info must be a JSON object")
    if doc["float_dtype"] not in FLOAT_DTYPES:
        raise ValueError(f"metadata.float_dtype must be one of {FLOAT_DTYPES}")
    ck = _fields(doc["checksum"], CHECKSUM_FIELDS, "metadata.checksum")
    if ck["algorithm"] != CHECKSUM_ALGORITHM or not isinstance(ck["digest"], str):
        raise ValueError(f"metadata.checksum must be {CHECKSUM_ALGORITHM} with a hex digest")
    if not isinstance(doc["layers"], list) or not isinstance(doc["state"], list):
        raise ValueError("metadata.layers and metadata.state must be lists")
    names: set[str] = set()
    for i, layer in enumerate(doc["layers"]):
        where = f"metadata.layers[{i}]"
        _fields(layer, LAYER_FIELDS, where)
        _validate_layer(layer, where)
        names.add(layer["path"])
    for i, entry in enumerate(doc["state"]):
        where = f"metadata.state[{i}]"
        _fields(entry, STATE_FIELDS, where)
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise ValueError(f"{where}.name must be a non-empty string")
        _shape(entry["shape"], f"{where}.shape")
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{where}.dtype {entry['dtype']!r} is not supported")
        names.add(entry["name"])
    if len(names) != len(doc["layers"]) + len(doc["state"]):
        raise ValueError("metadata names some tensor twice")
    return doc


def _validate_layer(layer: Mapping[str, Any], where: str) -> None:
    if not isinstance(layer["path"], str) or not layer["path"] or "/" in layer["path"]:
        raise ValueError(f"{where}.path must be a non-empty string without '/'")
    shape = _shape(layer["shape"], f"{where}.shape")
    if layer["dtype"] not in DTYPES or not DTYPES[layer["dtype"]].is_floating_point:
        raise ValueError(f"{where}.dtype {layer['dtype']!r} is not a supported floating dtype")
    numel, nnz = layer["numel"], layer["nnz"]
    if not _is_int(numel) or numel != _prod(shape):
        raise ValueError(f"{where}.numel does not match its shape")
    if numel > MAX_NUMEL:
        raise ValueError(f"{where} claims {numel:,} weights, more than the {MAX_NUMEL:,} a layer may have")
    if not _is_int(nnz) or not 0 <= nnz <= numel:
        raise ValueError(f"{where}.nnz must be an integer in [0, numel]")
    if layer["encoding"] not in ENCODINGS:
        raise ValueError(f"{where}.encoding must be one of {ENCODINGS}")
    for f in ("bits", "qn", "qp", "offset", "mask_rice_k"):
        _opt_int(layer[f], f"{where}.{f}")
    if layer["signed"] is not None and not isinstance(layer["signed"], bool):
        raise ValueError(f"{where}.signed must be a boolean or null")
    if layer["encoding"] == "quantized":
        bits, offset = layer["bits"], layer["offset"]
        if bits is None or not 1 <= bits <= 16 or offset is None or not 0 <= offset < (1 << bits):
            raise ValueError(f"{where}: a quantized layer needs bits in 1..16 and an offset in [0, 2**bits)")
    if layer["mask_coding"] not in ("bitmap", "rice"):
        raise ValueError(f"{where}.mask_coding must be 'bitmap' or 'rice'")
    if layer["mask_coding"] == "rice" and (
        layer["mask_rice_k"] is None or not 0 <= layer["mask_rice_k"] <= 63
    ):
        raise ValueError(f"{where}.mask_rice_k must be an integer in 0..63 for rice coding")
    if not isinstance(layer["mask_inverted"], bool):
        raise ValueError(f"{where}.mask_inverted must be a boolean")
    q = layer["quantizer"]
    if q is not None and not (isinstance(q, dict) and set(q) == {"name", "options"}):
        raise ValueError(f"{where}.quantizer must be null or an object with 'name' and 'options'")


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --- the tensors against the metadata (before any tensor byte is read or anything is decoded) ---

FLOATING = ("float64", "float32", "float16", "bfloat16")


def check_tensors(doc: Mapping[str, Any], tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """Check that the tensors (``{name: (dtype name, shape)}``, as the file's header says) are the
    ones a validated metadata document ``doc`` describes, with consistent sizes: masks and codes
    1-d ``uint8`` (a bitmap of ``ceil(numel / 8)`` bytes, codes of ``packed_size(nnz, bits)``),
    values ``(nnz,)`` in ``float_dtype``, scales floating and broadcastable to the layer's shape,
    state entries of the recorded shape in their stored dtype. ``ValueError`` names the tensor."""
    expected = expected_keys(doc)
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise ValueError(f"tensors do not match the metadata (unexpected {extra}, missing {missing})")
    float_dtype = doc["float_dtype"]
    for layer in doc["layers"]:
        p, numel, nnz, shape = layer["path"], layer["numel"], layer["nnz"], tuple(layer["shape"])
        where = f"layer {p}"
        part_of = {part: tensors[layer_key(p, part)] for part in ("mask", "codes", "scale", "values")
                   if layer_key(p, part) in tensors}
        for part in ("mask", "codes") if layer["encoding"] == "quantized" else ("mask",):
            dtype, tshape = part_of[part]
            if dtype != "uint8" or len(tshape) != 1:
                raise ValueError(f"{where}: {layer_key(p, part)} must be a 1-d uint8 tensor, "
                                 f"got {dtype} {list(tshape)}")
        mask_bytes = part_of["mask"][1][0]
        if layer["mask_coding"] == "bitmap" and mask_bytes != (numel + 7) // 8:
            raise ValueError(f"{where}: a bitmap mask of {numel:,} positions has {(numel + 7) // 8:,} bytes, "
                             f"not {mask_bytes:,}")
        if layer["encoding"] == "float":
            dtype, tshape = part_of["values"]
            if dtype != float_dtype or tshape != (nnz,):
                raise ValueError(f"{where}: values must be {float_dtype} of shape ({nnz},), got {dtype} {list(tshape)}")
            continue
        codes_bytes, need = part_of["codes"][1][0], (nnz * layer["bits"] + 7) // 8
        if codes_bytes != need:
            raise ValueError(f"{where}: codes hold {codes_bytes:,} bytes, {need:,} expected")
        dtype, tshape = part_of["scale"]
        if dtype not in FLOATING:
            raise ValueError(f"{where}: scale must be a floating tensor, got {dtype}")
        if not _broadcasts(tshape, shape):
            raise ValueError(f"{where}: scale of shape {tshape} does not fit {shape}")
    for entry in doc["state"]:
        stored = float_dtype if DTYPES[entry["dtype"]].is_floating_point else entry["dtype"]
        dtype, tshape = tensors[state_key(entry["name"])]
        if dtype != stored or list(tshape) != entry["shape"]:
            raise ValueError(f"state {entry['name']} must be {stored} of shape {entry['shape']}, "
                             f"got {dtype} {list(tshape)}")


def _broadcasts(small: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether broadcasting ``small`` against ``shape`` gives ``shape``."""
    if len(small) > len(shape):
        return False
    return all(s in (1, d) for s, d in zip(reversed(small), reversed(shape), strict=False))


def decoded_bytes(doc: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(name, bytes)`` of every entry of the state dict that decoding ``doc`` produces."""
    out = [(layer["path"], layer["numel"] * DTYPES[layer["dtype"]].itemsize) for layer in doc["layers"]]
    out += [(s["name"], _prod(s["shape"]) * DTYPES[s["dtype"]].itemsize) for s in doc["state"]]
    return out
