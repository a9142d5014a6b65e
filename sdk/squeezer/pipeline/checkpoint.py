"""Atomic, pickle-free checkpoints: safetensors for tensors, JSON metadata inside the same file."""

from __future__ import annotations

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
VERSION = 1


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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors and JSON-able ``meta`` atomically."""
    payload = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "version": VERSION, "meta": meta}
    atomic_write_bytes(path, st_save(payload, metadata={"squeezer": json.dumps(header)}))


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
    except (SafetensorError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a squeezer checkpoint or corrupt ({type(exc).__name__})") from None
    if doc.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a squeezer checkpoint (format {doc.get('format')!r})")
    if doc.get("version") != VERSION:
        raise ArtifactError(
            f"{path}: checkpoint version {doc.get('version')} is not supported (this squeezer reads {VERSION})"
        )
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
