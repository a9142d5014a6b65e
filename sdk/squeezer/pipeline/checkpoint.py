"""Atomic, pickle-free checkpoints: safetensors for tensors, JSON metadata inside the same file.

The metadata holds a SHA-256 over itself and every tensor (name, dtype, shape, bytes), so a
truncated, bit-flipped or edited checkpoint is refused instead of resuming from wrong weights.
The checksum proves integrity, not origin (anyone can recompute it), so the metadata is also
checked against one schema (:func:`check_meta`, :func:`check_tensors`) that :func:`save` applies
to what it writes and :func:`load` to what it reads, and :func:`load` checks the file's header
and sizes before it reads a tensor byte.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import save as st_save

from squeezer import atomic, safefile
from squeezer.errors import ArtifactError

FORMAT = "squeezer-checkpoint"
VERSION = 2  # 2: with a checksum


def _tensor_header(name: str, dtype: str, shape: list[int]) -> bytes:
    return f"\0{name}\0torch.{dtype}\0{shape}\0".encode()


def _digest(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the header (without ``sha256``, canonical JSON) and every tensor in name order."""
    h = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(_tensor_header(name, str(t.dtype).removeprefix("torch."), list(tensors[name].shape)))
        if t.numel():
            array: Any = t.view(torch.uint8).numpy()  # a buffer; numpy's stubs do not say so
            h.update(memoryview(array))
    return h.hexdigest()


def _file_digest(header: dict[str, Any], st: safefile.SafetensorsFile) -> str:
    """:func:`_digest` of the file's tensors, streamed from the file (memory: one chunk)."""
    h = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(st.tensors):
        entry = st.tensors[name]
        h.update(_tensor_header(name, entry.dtype, list(entry.shape)))
        for block in st.chunks(entry):
            h.update(block)
    return h.hexdigest()


# --- the schema of the metadata (the writer checks what it writes, the reader what it reads) ---

META_FIELDS = frozenset({"stage", "epoch", "step", "spec", "records", "optim_scalars", "recipe_hash", "recipe"})
SPEC_FIELDS = frozenset({"weights", "quantizers"})
TENSOR_PREFIXES = ("model.", "extra.", "optim.model.", "optim.extra.")
RNG = "rng"  # torch's CPU generator state (a mid-epoch checkpoint)


def _kind(v: Any) -> str:
    return "null" if v is None else {dict: "object", list: "array", str: "string", bool: "boolean",
                                     int: "integer", float: "number"}.get(type(v), type(v).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _object(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ValueError(f"{where} must be an object, got {_kind(v)}")
    return v


def _string(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{where} must be a non-empty string, got {_kind(v)}")
    return v


def _count(v: Any, where: str) -> int:
    if not _is_int(v) or v < 0:
        raise ValueError(f"{where} must be a non-negative integer, got {_kind(v)} {v!r}"[:200])
    return int(v)


def _number(v: Any, where: str) -> None:
    if not (isinstance(v, int | float) and not isinstance(v, bool)):
        raise ValueError(f"{where} must be a number, got {_kind(v)}")


def check_spec(spec: Any, where: str = "spec") -> None:
    """The structure :func:`squeezer.compress.spec` writes and :func:`squeezer.compress.restore` reads:
    ``{"weights": [path, ...], "quantizers": {path: {"name": str, "options": {...}}}}``, and
    ``"aliases": {path: [other path, ...]}`` when some weight is tied."""
    from squeezer.compress.model import SPEC_VERSION

    _object(spec, where)
    if set(spec) - {"version", "aliases"} != SPEC_FIELDS:
        raise ValueError(f"{where} must have exactly the fields 'quantizers' and 'weights' (and 'version', "
                         f"'aliases'), got {sorted(spec)}")
    version = spec.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise ValueError(f"{where}: format version {version!r}, this squeezer reads version {SPEC_VERSION}")
    weights = spec["weights"]
    if not isinstance(weights, list):
        raise ValueError(f"{where}.weights must be an array, got {_kind(weights)}")
    for i, path in enumerate(weights):
        _string(path, f"{where}.weights[{i}]")
    if len(set(weights)) != len(weights):
        raise ValueError(f"{where}.weights names a weight twice")
    for path, others in _object(spec.get("aliases", {}), f"{where}.aliases").items():
        if path not in weights or not isinstance(others, list) or not others:
            raise ValueError(f"{where}.aliases[{path!r}] must be a non-empty array for one of {where}.weights")
        for i, other in enumerate(others):
            _string(other, f"{where}.aliases[{path!r}][{i}]")
    for path, entry in _object(spec["quantizers"], f"{where}.quantizers").items():
        at = f"{where}.quantizers[{path!r}]"
        if path not in weights:
            raise ValueError(f"{at}: not one of {where}.weights")
        _object(entry, at)
        if set(entry) != {"name", "options"}:
            raise ValueError(f"{at} must have exactly the fields 'name' and 'options', got {sorted(entry)}")
        _string(entry["name"], f"{at}.name")
        _object(entry["options"], f"{at}.options")


def check_records(records: Any, where: str = "records") -> None:
    """The run record (:class:`squeezer.pipeline.record.RunRecord`) as JSON: its version, its
    fields and their types."""
    from squeezer.pipeline.record import RETIRED, VERSION, RunRecord

    _object(records, where)
    version = records.get("version", VERSION)  # records before versioning had this layout
    if version != VERSION:
        raise ValueError(f"{where}: format version {version!r}, this squeezer reads version {VERSION}")
    unknown = sorted(set(records) - {a.name for a in attrs.fields(RunRecord)} - RETIRED - {"version"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    targets = records.get("targets")
    if targets is not None:
        if not isinstance(targets, list):
            raise ValueError(f"{where}.targets must be an array, got {_kind(targets)}")
        for i, path in enumerate(targets):
            _string(path, f"{where}.targets[{i}]")
    if records.get("dense_accuracy") is not None:
        _number(records["dense_accuracy"], f"{where}.dense_accuracy")
    for field in ("stage_accuracy", "teacher_accuracy"):
        for key, value in _object(records.get(field, {}), f"{where}.{field}").items():
            _number(value, f"{where}.{field}[{key!r}]")
    for key, value in _object(records.get("bits", {}), f"{where}.bits").items():
        _count(value, f"{where}.bits[{key!r}]")
    if records.get("kd_teacher_spec") is not None:
        check_spec(records["kd_teacher_spec"], f"{where}.kd_teacher_spec")


def check_meta(meta: Any) -> None:
    """Check a checkpoint's ``meta`` document (what :func:`squeezer.pipeline.loop.save` writes);
    raise ``ValueError("FIELD ...")`` naming the first field at fault."""
    _object(meta, "meta")
    unknown, missing = sorted(set(meta) - META_FIELDS), sorted(META_FIELDS - set(meta))
    if unknown or missing:
        raise ValueError(f"unknown field(s) {unknown} / missing field(s) {missing}")
    stage, epoch, step = (_count(meta[f], f) for f in ("stage", "epoch", "step"))
    check_spec(meta["spec"])
    check_records(meta["records"])
    for key, value in _object(meta["optim_scalars"], "optim_scalars").items():
        if not (value is None or isinstance(value, bool | int | float | str)):
            raise ValueError(f"optim_scalars[{key!r}] must be a number, string, boolean or null, got {_kind(value)}")
    digest = meta["recipe_hash"]
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError(f"recipe_hash must be a SHA-256 hex digest, got {_kind(digest)}")
    stages = _object(meta["recipe"], "recipe").get("stages")
    if isinstance(stages, list):  # the recipe itself is checked when it is built (recipe_from_dict)
        started = epoch > 0 or step > 0
        if stage > len(stages) or (started and stage == len(stages)):
            raise ValueError(f"stage {stage} (epoch {epoch}, step {step}) is past the recipe's {len(stages)} stage(s)")


def check_tensors(tensors: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """Check tensor names and the rng state (``{name: (dtype name, shape)}``); ``ValueError`` if wrong."""
    for name, (dtype, shape) in tensors.items():
        if name == RNG:
            if dtype != "uint8" or len(shape) != 1:
                raise ValueError(f"tensor {RNG!r} (the random generator state) must be 1-d uint8, "
                                 f"got {dtype} {list(shape)}")
        elif not name.startswith(TENSOR_PREFIXES) or any(name == p for p in TENSOR_PREFIXES):
            raise ValueError(f"unexpected tensor {name!r} "
                             f"(names start with {', '.join(TENSOR_PREFIXES)} or are {RNG!r})")
        if not any(dtype == t for t, _ in safefile.DTYPES.values()):
            raise ValueError(f"tensor {name!r} has dtype {dtype}, which checkpoints do not hold")


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors and JSON-able ``meta`` atomically (both checked against the schema first)."""
    payload = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "meta": meta}
    text = json.dumps(header)
    try:  # what we write, we can read
        check_meta(json.loads(text)["meta"])
        check_tensors({k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in payload.items()})
    except ValueError as exc:
        raise RuntimeError(f"{path}: internal error: the checkpoint to write fails its own schema: {exc}") from exc
    header["sha256"] = _digest(header, payload)
    atomic.write_bytes(path, st_save(payload, metadata={"squeezer": json.dumps(header)}))


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint; anything but an intact squeezer checkpoint raises :class:`ArtifactError`.

    Before a tensor byte is read: the file must be a regular file, its safetensors header
    consistent with its size (:func:`squeezer.safefile.open_safetensors`), its metadata a
    checkpoint document of this version that passes :func:`check_meta` and :func:`check_tensors`.
    The checksum is then computed streaming from the file, and only an intact file's tensors are
    read into memory.
    """
    with safefile.open_safetensors(path, "checkpoint") as st:
        doc = _document(path, st.metadata)
        try:
            check_meta(doc["meta"])
            check_tensors({name: (e.dtype, e.shape) for name, e in st.tensors.items()})
        except ValueError as exc:
            raise ArtifactError(f"{path}: checkpoint metadata: {exc}") from None
        if not hmac.compare_digest(_file_digest(doc, st), doc["sha256"]):
            raise ArtifactError(f"{path}: checkpoint checksum mismatch (corrupt or modified); refusing to load it")
        return {name: st.tensor(entry) for name, entry in st.tensors.items()}, doc["meta"]


def _document(path: Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    try:
        doc = json.loads((metadata or {})["squeezer"])
    except (ValueError, KeyError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not a squeezer checkpoint or corrupt ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ArtifactError(f"{path}: not a squeezer checkpoint (format {found!r})")
    if doc.get("version") != VERSION:
        raise ArtifactError(
            f"{path}: checkpoint version {doc.get('version')!r} is not supported (this squeezer reads {VERSION})"
        )
    if not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("sha256"), str):
        raise ArtifactError(f"{path}: corrupt checkpoint (metadata without 'meta' or 'sha256')")
    return doc


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state keyed by parameter *name* (robust to parameter order), split into tensors and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{name}.{key}"] = value
                else:
                    scalars[f"{name}.{key}"] = value
    return tensors, scalars


def restore_optimizer(
    optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            state: dict[str, Any] = {}
            prefix = f"optim.{name}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = value.to(p.device)
            for key, value in scalars.items():
                if key.startswith(f"{name}."):
                    state[key[len(name) + 1:]] = value
            if state:
                optimizer.state[p] = state
