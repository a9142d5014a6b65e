"""Atomic, pickle-free checkpoints: safetensors for tensors, JSON metadata inside the same file.

The metadata holds a SHA-256 over itself and every tensor (name, dtype, shape, bytes), so a
truncated, bit-flipped or edited checkpoint is refused instead of resuming from wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from squeezer.errors import ArtifactError

FORMAT = "squeezer-checkpoint"
VERSION = 2  # 2: with a checksum


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # name the file the user knows
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def _digest(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the header (without ``sha256``, canonical JSON) and every tensor in name order."""
    h = hashlib.sha256()
    body = {k: v for k, v in header.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"\0{name}\0{t.dtype}\0{list(tensors[name].shape)}\0".encode())
        if t.numel():
            array: Any = t.view(torch.uint8).numpy()  # a buffer; numpy's stubs do not say so
            h.update(memoryview(array))
    return h.hexdigest()


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors and JSON-able ``meta`` atomically."""
    payload = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "meta": meta}
    header["sha256"] = _digest(header, payload)
    atomic_write_bytes(path, st_save(payload, metadata={"squeezer": json.dumps(header)}))
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint; anything but an intact squeezer checkpoint raises :class:`ArtifactError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read checkpoint: {exc}") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        doc = json.loads(header["__metadata__"]["squeezer"])
    except (SafetensorError, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
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
    if _digest(doc, tensors) != doc["sha256"]:
        raise ArtifactError(f"{path}: checkpoint checksum mismatch (corrupt or modified); refusing to load it")
    return tensors, doc["meta"]


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
