"""The artifact layout (format ``squeezer-artifact``, version 2): one blob, a compressed record, a checksum.

An artifact is a safetensors file with exactly one tensor, ``data`` (1-d ``uint8``), and one
metadata key, ``"squeezer"``, whose value is a small JSON object::

    {"format": "squeezer-artifact", "sha256": "<hex digest of data>", "version": 2}

``data`` starts with the *record*, canonical JSON (sorted keys, no spaces) compressed with zlib
(level 9, the preset dictionary :data:`ZDICT`), a stream that ends itself; the *parts* follow it
back to back, in the record's order, each as its raw little-endian bytes::

    {"float_dtype": "float32", "info": {...}, "layers": [LAYER, ...], "state": [STATE, ...]}

A ``LAYER`` (one compressed weight, the student ``Q(W ⊙ M)``) has the fields of
:data:`LAYER_FIELDS`; its parts are

- ``mask``: ``mask_bytes`` bytes, the mask coded as ``mask_coding`` says (:mod:`.maskcode`);
- ``encoding == "quantized"``: ``codes``, the integer codes of the kept positions in flat order,
  ``code + offset`` packed in ``bits`` bits (:mod:`.bitpack`, ``offset = qn``), then ``scale``, the
  step size(s) in ``scale_dtype``, of shape ``scale_shape`` (broadcastable to ``shape``);
- ``encoding == "float"`` (masked, not quantized): ``values``, the ``nnz`` kept values in ``float_dtype``.

A ``STATE`` entry (``name``, ``shape``, ``dtype``) is any other entry of the model's state dict,
its part stored in ``float_dtype`` when floating, as it is otherwise.

With activation quantizers the record has a fourth list, ``"activations": [ACT, ...]`` (absent
without them, so such files are what they were before it existed). An ``ACT`` (``module``,
``bits``, ``signed``, ``dtype``) names a module whose input an LSQ activation quantizer
quantizes (:mod:`squeezer.engine.activations`) on the grid of ``bits`` bits, signed or not; its
one part, ``step``, is the learned step, a scalar in ``dtype`` (4 bytes for float32), after the
state's parts. The quantizer's other state (its grid, its ``initialized`` flag) follows from the
entry and is not stored.

Every part's size follows from the record, and they must add up to the rest of ``data``
exactly. The reader presents the parts under the names ``layer/<path>/<part>`` and
``state/<name>`` (:func:`layer_key`, :func:`state_key`). Version 1 (one safetensors tensor per
part, the record as plain JSON in the metadata) is refused with a message naming both versions.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from squeezer.artifact.bitpack import MAX_BITS, packed_size
from squeezer.safefile import SafetensorsFile

FORMAT_NAME = "squeezer-artifact"
FORMAT_VERSION = 2
METADATA_KEY = "squeezer"
DATA_KEY = "data"
#: the largest record a reader decompresses (a zlib stream can expand ~1000x)
MAX_RECORD_BYTES = 16 << 20

HEADER_FIELDS = frozenset({"format", "version", "sha256"})
RECORD_FIELDS = frozenset({"float_dtype", "info", "layers", "state"})
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
        "mask_bytes",
        "scale_shape",
        "scale_dtype",
        "quantizer",
    }
)
#: layer fields a writer leaves out when empty: ``aliases``, the other paths of a tied weight
OPTIONAL_LAYER_FIELDS = frozenset({"aliases"})
STATE_FIELDS = frozenset({"name", "shape", "dtype"})
#: record fields a writer leaves out when empty
OPTIONAL_RECORD_FIELDS = frozenset({"activations"})
ACTIVATION_FIELDS = frozenset({"module", "bits", "signed", "dtype"})
#: the child module name of an activation quantizer, and its state entries the artifact holds / implies
ACTIVATION_CHILD = "input_quantizer"
ENCODINGS = ("quantized", "float")
MAX_DIMS = 64
MAX_NUMEL = 1 << 48  # far beyond any real layer; keeps the mask decoder's int64 arithmetic exact
FLOAT_DTYPES = ("float32", "float16")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

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
FLOATING = ("float64", "float32", "float16", "bfloat16")

#: zlib's preset dictionary for the record: the words records are made of (field names, dtypes,
#: state names, the bundled default recipe as ``squeezer run`` records it). Part of format
#: version 2: never change it (a test pins its digest); a new dictionary is a new version.
ZDICT = (
    b'{"model_factory":"squeezer.examples.digits:make_model","model_options":{},"recipe":{"data":'
    b'{"factory":"squeezer.examples.digits:make_loaders","options":{"batch_size":64}},"device":"auto",'
    b'"disable_plugins":[],"model":{"factory":"squeezer.examples.digits:make_model","options":{}},'
    b'"seed":0,"stages":[{"epochs":12,"name":"dense","optim":null,"type":"train"},'
    b'{"calibration_batches":8,"epochs":0,"epochs_per_round":4,"importance":{"name":"lamp","options":{}},'
    b'"min_density":0.005,"name":"phase1","optim":{"lr":0.001,"lr_schedule":"cosine","momentum":0.9,'
    b'"optimizer":"adam","quantizer_lr_scale":3.0,"weight_decay":0.0},"quantizer":{"name":"lsq",'
    b'"options":{"bits":4},"overrides":[{"options":{"bits":8},"pattern":"@first","skip":false}]},'
    b'"scheduler":{"name":"geometric","options":{"rounds":5,"target":0.95}},"scope":"global",'
    b'"type":"prune"},{"distillation":{"name":"hinton","options":{"temperature":4.0}},"epochs":10,'
    b'"kd_weight":1.0,"name":"phase2","optim":{"lr":0.0005,"lr_schedule":"cosine","momentum":0.9,'
    b'"optimizer":"adam","quantizer_lr_scale":3.0,"weight_decay":0.0},"teacher_owns":["norm"],'
    b'"teacher_quantized":true,"type":"mutual","warmup_epochs":2}],"sync_batchnorm":false,'
    b'"targets":{"exclude":[],"include":["*"],"parameters":[],"types":["Linear","Conv1d","Conv2d",'
    b'"Conv3d","RNNBase","RNNCellBase","MultiheadAttention","Conv1D"]},"threads":1,"training":'
    b'{"lr":0.002,"lr_schedule":"cosine","momentum":0.9,"optimizer":"adam","quantizer_lr_scale":3.0,'
    b'"weight_decay":0.0},"version":1}}'
    b'{"float_dtype":"float32","info":{},"layers":[{"bits":null,"dtype":"float32","encoding":"float",'
    b'"mask_bytes":0,"mask_coding":"bitmap","mask_inverted":false,"mask_rice_k":null,"nnz":0,"numel":0,'
    b'"offset":null,"path":"0.weight","qn":null,"qp":null,"quantizer":null,"scale_dtype":null,'
    b'"scale_shape":null,"shape":[],"signed":null},'
    b'"state":[{"dtype":"float32","name":"0.bias","shape":[]},{"dtype":"int64","name":".num_batches_tracked",'
    b'"shape":[]},{"dtype":"float32","name":".running_mean","shape":[]},{"dtype":"float32","name":'
    b'".running_var","shape":[]},{"dtype":"float32","name":".weight","shape":[]},'
    b'{"bits":4,"dtype":"float32","encoding":"quantized","mask_bytes":0,"mask_coding":"rice",'
    b'"mask_inverted":true,"mask_rice_k":1,"nnz":0,"numel":0,"offset":8,"path":"3.weight","qn":8,"qp":7,'
    b'"quantizer":{"name":"lsq","options":{"bits":4,"log_step":false,"per_channel":true,"signed":true}},'
    b'"scale_dtype":"float32","scale_shape":[64,1,1,1],"shape":[64,32,3,3],"signed":true}'
)


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"dtype {dtype} cannot be stored in an artifact")
    return name


def layer_key(path: str, part: str) -> str:
    return f"layer/{path}/{part}"


def state_key(name: str) -> str:
    return f"state/{name}"


def activation_key(module: str) -> str:
    return f"act/{module}/step"


def activation_prefix(module: str) -> str:
    """The prefix of the state-dict names of the activation quantizer on ``module``."""
    return f"{module}.{ACTIVATION_CHILD}." if module else f"{ACTIVATION_CHILD}."


# --- the record: canonical JSON, compressed --------------------------------------------------------


def canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def compress_record(record: Mapping[str, Any]) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT)
    return packer.compress(canonical(record)) + packer.flush()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("the record names a key twice")
    return out


def decompress_record(data: bytes | memoryview) -> tuple[Any, int]:
    """The record at the start of ``data`` (parsed, not yet validated) and where the parts begin.

    At most :data:`MAX_RECORD_BYTES` are inflated: a stream that would inflate to more, or ends
    before its end, is an error, not a memory spike."""
    unpacker = zlib.decompressobj(zlib.MAX_WBITS, ZDICT)
    try:
        text = unpacker.decompress(data, MAX_RECORD_BYTES + 1)
    except zlib.error as e:
        raise ValueError(f"the record is not a valid zlib stream ({e})") from None
    if len(text) > MAX_RECORD_BYTES:
        raise ValueError(f"the record inflates to more than {MAX_RECORD_BYTES:,} bytes")
    if not unpacker.eof:
        raise ValueError("the record's zlib stream is truncated")
    try:
        source = text.decode("utf-8")  # never guessed: JSON of another encoding is not a record
    except UnicodeDecodeError:
        raise ValueError("the record is not UTF-8 JSON") from None
    try:
        record = json.loads(source, object_pairs_hook=_no_duplicates)
    except RecursionError:  # 16 MiB of '[' inflate from 16 KB
        raise ValueError("the record nests too deeply") from None
    return record, len(data) - len(unpacker.unused_data)


# --- writing -------------------------------------------------------------------------------------


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    if not flat.numel():
        return b""
    return bytes(flat.view(torch.uint8).numpy().tobytes())


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_data(record: Mapping[str, Any], parts: Iterable[torch.Tensor]) -> bytes:
    """The ``data`` blob: the compressed record, then the bytes of ``parts`` (in the record's order)."""
    return compress_record(record) + b"".join(_tensor_bytes(t) for t in parts)


def container(data: bytes, header: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> bytes:
    """The safetensors file holding ``data`` with ``header`` as its metadata (``extra``: more
    metadata keys, which a reader refuses; for tests that craft files)."""
    blob = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    text = json.dumps(dict(header), sort_keys=True, separators=(",", ":"))
    return bytes(safetensors_save({DATA_KEY: blob}, metadata={METADATA_KEY: text, **(extra or {})}))


def encode(record: Mapping[str, Any], parts: Iterable[torch.Tensor]) -> bytes:
    """The bytes of an artifact: ``record`` and ``parts`` (in the record's order) as one blob,
    its digest in the metadata. Checks nothing: the writer validates first, tests craft with it."""
    data = pack_data(record, parts)
    return container(data, {"format": FORMAT_NAME, "sha256": digest(data), "version": FORMAT_VERSION})


def file_digest(st: SafetensorsFile) -> str:
    """SHA-256 (hex) of ``data`` in an open file, streamed from it (memory: one chunk)."""
    h = hashlib.sha256()
    for block in st.chunks(st.tensors[DATA_KEY]):
        h.update(block)
    return h.hexdigest()


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
    """Check format name and version first, so another version reports its version, not its fields."""
    if not isinstance(doc, dict):
        raise ValueError("metadata must be a JSON object")
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"not a {FORMAT_NAME} file (format field is {doc.get('format')!r})")
    version = doc.get("version")
    if version != FORMAT_VERSION or not _is_int(version):
        older = isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION
        hint = "; re-export it from its run's checkpoint with this squeezer (squeezer export RUN_DIR --out FILE)"
        hint = hint if older else ""
        raise ValueError(f"artifact format version {version} is not supported "
                         f"(this squeezer reads version {FORMAT_VERSION}){hint}")


def validate_header(doc: Any) -> dict[str, Any]:
    """Check the metadata object (format, version, digest); return it."""
    check_version(doc)
    _fields(doc, HEADER_FIELDS, "metadata")
    if not isinstance(doc["sha256"], str) or not _HEX_DIGEST.fullmatch(doc["sha256"]):
        raise ValueError("metadata.sha256 must be 64 lowercase hex digits")
    return doc


def check_tensors(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """The file's tensors (``{name: (dtype name, shape)}``, as its header says) must be exactly
    one 1-d ``uint8`` tensor ``data``."""
    got = {name: (dtype, list(shape)) for name, (dtype, shape) in tensors.items()}
    if set(got) != {DATA_KEY} or got[DATA_KEY][0] != "uint8" or len(got[DATA_KEY][1]) != 1:
        raise ValueError(f"an artifact holds one 1-d uint8 tensor {DATA_KEY!r}, this file holds {got}")


def validate(doc: Any) -> dict[str, Any]:
    """Check a record against the version-2 schema; return it."""
    _fields(doc, RECORD_FIELDS | (OPTIONAL_RECORD_FIELDS & set(doc)) if isinstance(doc, dict) else RECORD_FIELDS,
            "record")
    if not isinstance(doc["info"], dict):
        raise ValueError("record.info must be a JSON object")
    if doc["float_dtype"] not in FLOAT_DTYPES:
        raise ValueError(f"record.float_dtype must be one of {FLOAT_DTYPES}")
    if not isinstance(doc["layers"], list) or not isinstance(doc["state"], list):
        raise ValueError("record.layers and record.state must be lists")
    names: set[str] = set()
    n_names = len(doc["state"])
    for i, layer in enumerate(doc["layers"]):
        where = f"record.layers[{i}]"
        _fields(layer, LAYER_FIELDS | (OPTIONAL_LAYER_FIELDS & set(layer)) if isinstance(layer, dict)
                else LAYER_FIELDS, where)
        _validate_layer(layer, where)
        aliases = _aliases(layer, where)
        names.add(layer["path"])
        names.update(aliases)
        n_names += 1 + len(aliases)
    for i, entry in enumerate(doc["state"]):
        where = f"record.state[{i}]"
        _fields(entry, STATE_FIELDS, where)
        if not isinstance(entry["name"], str) or not entry["name"]:
            raise ValueError(f"{where}.name must be a non-empty string")
        _shape(entry["shape"], f"{where}.shape")
        if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
            raise ValueError(f"{where}.dtype {entry['dtype']!r} is not supported")
        names.add(entry["name"])
    if len(names) != n_names:
        raise ValueError("the record names some tensor twice")
    _validate_activations(doc, names)
    return doc


def _validate_activations(doc: Mapping[str, Any], names: set[str]) -> None:
    if "activations" not in doc:
        return
    acts = doc["activations"]
    if not isinstance(acts, list) or not acts:
        raise ValueError("record.activations must be a non-empty list (left out when there are none)")
    modules: set[str] = set()
    for i, entry in enumerate(acts):
        where = f"record.activations[{i}]"
        _fields(entry, ACTIVATION_FIELDS, where)
        module = entry["module"]
        if not isinstance(module, str) or "/" in module or module in modules:
            raise ValueError(f"{where}.module must be a string without '/', each module once")
        modules.add(module)
        if not _is_int(entry["bits"]) or not 2 <= entry["bits"] <= 8:
            raise ValueError(f"{where}.bits must be an integer in 2..8")
        if not isinstance(entry["signed"], bool):
            raise ValueError(f"{where}.signed must be a boolean")
        if entry["dtype"] not in FLOATING:
            raise ValueError(f"{where}.dtype {entry['dtype']!r} is not a supported floating dtype")
        prefix = activation_prefix(module)
        if any(name.startswith(prefix) for name in names):
            raise ValueError(f"{where}: the state also holds entries of {module!r}'s activation quantizer")


def activation_state(entry: Mapping[str, Any], step: torch.Tensor) -> dict[str, torch.Tensor]:
    """The state-dict entries of the activation quantizer a validated ``ACT`` entry describes."""
    bits = entry["bits"]
    qn, qp = (1 << (bits - 1), (1 << (bits - 1)) - 1) if entry["signed"] else (0, (1 << bits) - 1)
    prefix = activation_prefix(entry["module"])
    return {
        prefix + "step": step.reshape(()).to(DTYPES[entry["dtype"]]),
        prefix + "initialized": torch.tensor(True),
        prefix + "n_bits": torch.tensor(entry["bits"], dtype=torch.int64),
        prefix + "q_neg": torch.tensor(qn, dtype=torch.int64),
        prefix + "q_pos": torch.tensor(qp, dtype=torch.int64),
    }


def _validate_layer(layer: Mapping[str, Any], where: str) -> None:
    if not isinstance(layer["path"], str) or not layer["path"] or "/" in layer["path"]:
        raise ValueError(f"{where}.path must be a non-empty string without '/'")
    shape = _shape(layer["shape"], f"{where}.shape")
    if not isinstance(layer["dtype"], str) or layer["dtype"] not in FLOATING:
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
        if bits is None or not 1 <= bits <= MAX_BITS or offset is None or not 0 <= offset < (1 << bits):
            raise ValueError(f"{where}: a quantized layer needs bits in 1..{MAX_BITS} and an offset in [0, 2**bits)")
        scale_shape = _shape(layer["scale_shape"], f"{where}.scale_shape")
        if layer["scale_dtype"] not in FLOATING:
            raise ValueError(f"{where}: scale must be a floating tensor, got {layer['scale_dtype']!r}")
        if not _broadcasts(tuple(scale_shape), tuple(shape)):
            raise ValueError(f"{where}: scale of shape {tuple(scale_shape)} does not fit {tuple(shape)}")
    elif layer["scale_shape"] is not None or layer["scale_dtype"] is not None:
        raise ValueError(f"{where}: a float layer has no scale (scale_shape and scale_dtype must be null)")
    if layer["mask_coding"] not in ("bitmap", "rice"):
        raise ValueError(f"{where}.mask_coding must be 'bitmap' or 'rice'")
    if layer["mask_coding"] == "rice" and (
        layer["mask_rice_k"] is None or not 0 <= layer["mask_rice_k"] <= 63
    ):
        raise ValueError(f"{where}.mask_rice_k must be an integer in 0..63 for rice coding")
    if not isinstance(layer["mask_inverted"], bool):
        raise ValueError(f"{where}.mask_inverted must be a boolean")
    mask_bytes = layer["mask_bytes"]
    if not _is_int(mask_bytes) or mask_bytes < 0:
        raise ValueError(f"{where}.mask_bytes must be a non-negative integer")
    if layer["mask_coding"] == "bitmap" and mask_bytes != (numel + 7) // 8:
        raise ValueError(f"{where}: a bitmap mask of {numel:,} positions has {(numel + 7) // 8:,} bytes, "
                         f"not {mask_bytes:,}")
    q = layer["quantizer"]
    if q is not None and not (isinstance(q, dict) and set(q) == {"name", "options"}):
        raise ValueError(f"{where}.quantizer must be null or an object with 'name' and 'options'")


def _aliases(layer: Mapping[str, Any], where: str) -> list[str]:
    """The other paths of a tied layer (its weight is stored once, loaded at each path)."""
    if "aliases" not in layer:
        return []
    aliases = layer["aliases"]
    if not isinstance(aliases, list) or not aliases or not all(
            isinstance(a, str) and a and "/" not in a for a in aliases):
        raise ValueError(f"{where}.aliases must be a non-empty list of paths without '/' (left out when none)")
    return aliases


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _broadcasts(small: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether broadcasting ``small`` against ``shape`` gives ``shape``."""
    if len(small) > len(shape):
        return False
    return all(s in (1, d) for s, d in zip(reversed(small), reversed(shape), strict=False))


# --- the parts of a (validated) record -----------------------------------------------------------


def parts(doc: Mapping[str, Any]) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(name, dtype name, shape)`` of every part a validated record describes, in file order."""
    float_dtype = doc["float_dtype"]
    out: list[tuple[str, str, tuple[int, ...]]] = []
    for layer in doc["layers"]:
        p, nnz = layer["path"], layer["nnz"]
        out.append((layer_key(p, "mask"), "uint8", (layer["mask_bytes"],)))
        if layer["encoding"] == "quantized":
            out.append((layer_key(p, "codes"), "uint8", (packed_size(nnz, layer["bits"]),)))
            out.append((layer_key(p, "scale"), layer["scale_dtype"], tuple(layer["scale_shape"])))
        else:
            out.append((layer_key(p, "values"), float_dtype, (nnz,)))
    for entry in doc["state"]:
        stored = float_dtype if DTYPES[entry["dtype"]].is_floating_point else entry["dtype"]
        out.append((state_key(entry["name"]), stored, tuple(entry["shape"])))
    for act in doc.get("activations", ()):
        out.append((activation_key(act["module"]), act["dtype"], ()))
    return out


def part_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    return _prod(list(shape)) * DTYPES[dtype].itemsize


def check_parts(doc: Mapping[str, Any], payload_bytes: int) -> None:
    """The parts a validated record describes must fill exactly the ``payload_bytes`` after it
    (checked from the record alone, before any part is sliced or decoded)."""
    layout = parts(doc)
    need = sum(part_bytes(dtype, shape) for _, dtype, shape in layout)
    if need != payload_bytes:
        raise ValueError(f"the record describes {need:,} bytes of parts ({len(layout)} parts), "
                         f"the file holds {payload_bytes:,}")


def split(doc: Mapping[str, Any], payload: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parts of a checked record (:func:`check_parts`) as tensors, from ``payload`` (1-d uint8)."""
    out: dict[str, torch.Tensor] = {}
    at = 0
    for name, dtype, shape in parts(doc):
        n = part_bytes(dtype, shape)
        chunk = payload[at : at + n].clone()  # aligned and owned: a view of the blob may be misaligned
        if dtype == "bool":  # any nonzero byte is True: no invalid bool reaches torch
            out[name] = (chunk != 0).reshape(shape)
        else:
            out[name] = chunk if dtype == "uint8" else chunk.view(DTYPES[dtype]).reshape(shape)
        at += n
    return out


def decoded_bytes(doc: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(name, bytes)`` of every entry of the state dict that decoding ``doc`` produces."""
    # a tied layer decodes to one tensor, loaded at each of its paths
    out = [(layer["path"], layer["numel"] * DTYPES[layer["dtype"]].itemsize) for layer in doc["layers"]]
    out += [(s["name"], _prod(s["shape"]) * DTYPES[s["dtype"]].itemsize) for s in doc["state"]]
    out += [(activation_key(a["module"]), 4 * 8 + 1) for a in doc.get("activations", ())]
    return out
