"""Open files a user names (recipes, checkpoints, artifacts) without trusting what they are.

- :func:`regular_file`, :func:`open_regular`: only regular files; a FIFO, a device such as
  ``/dev/zero``, a socket or a directory is refused at once (``os.stat`` first, so nothing
  blocks in ``open``; the opened descriptor is checked again with ``fstat``).
- :func:`read_bounded`, :func:`read_text`: the whole content, refused beyond a size bound.
- :func:`open_safetensors`: a safetensors file whose header (length, JSON, dtypes, shapes and
  offsets) is checked against the file size before any tensor byte is read; tensors are then
  read one at a time (:meth:`SafetensorsFile.chunks`, :meth:`SafetensorsFile.readinto`), so
  memory follows what the caller asks for, not what the header claims.

Every problem is raised as ``error(message)`` (default :class:`~squeezer.errors.ArtifactError`)
with a one-line message starting with the path. This module is torch-free.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import attrs

from squeezer.errors import ArtifactError, SqueezerError

StrPath = str | os.PathLike[str]
ErrorType = type[SqueezerError]

_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "not a regular file (a FIFO)"),
    (stat.S_ISCHR, "not a regular file (a character device)"),
    (stat.S_ISBLK, "not a regular file (a block device)"),
    (stat.S_ISSOCK, "not a regular file (a socket)"),
)


def _refusal(st: os.stat_result) -> str | None:
    if stat.S_ISREG(st.st_mode):
        return None
    return next((reason for test, reason in _KINDS if test(st.st_mode)), "not a regular file")


def regular_file(path: StrPath, what: str = "file", error: ErrorType = ArtifactError) -> os.stat_result:
    """``os.stat(path)`` if ``path`` is (a link to) a regular file; else ``error("PATH: cannot read WHAT: ...")``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{os.fspath(path)}: cannot read {what}: no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(f"{os.fspath(path)}: cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None
    reason = _refusal(st)
    if reason is not None:
        raise error(f"{os.fspath(path)}: cannot read {what}: {reason}")
    return st


def open_regular(path: StrPath, what: str = "file", error: ErrorType = ArtifactError) -> io.BufferedReader:
    """Open a regular file for binary reading (see :func:`regular_file`); never blocks on a FIFO."""
    regular_file(path, what, error)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: a FIFO swapped in after the stat does not block
    except OSError as exc:
        raise error(f"{os.fspath(path)}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        reason = _refusal(os.fstat(fd))
        if reason is not None:
            raise error(f"{os.fspath(path)}: cannot read {what}: {reason}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: StrPath, limit: int, what: str = "file", error: ErrorType = ArtifactError) -> bytes:
    """The content of a regular file of at most ``limit`` bytes."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            data = f.read(limit + 1)  # the file may have grown since the fstat
        except OSError as exc:
            raise error(f"{os.fspath(path)}: cannot read {what}: {exc.strerror or exc}") from None
    if max(size, len(data)) > limit:
        raise error(f"{os.fspath(path)}: {what} is larger than {limit:,} bytes; refusing to read it")
    return data


def read_text(
    path: StrPath, limit: int, what: str = "file", error: ErrorType = ArtifactError, encoding: str = "utf-8"
) -> str:
    """The text of a regular file of at most ``limit`` bytes."""
    data = read_bounded(path, limit, what, error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{os.fspath(path)}: cannot read {what}: not valid {encoding} ({exc.reason})") from None


# --- safetensors ----------------------------------------------------------------------------------

#: Headers longer than this are refused before they are read. safetensors itself allows 100 MB; a
#: squeezer file's header is its tensor table (~100 bytes a tensor) plus the squeezer metadata
#: (recipe, per-layer records), so 32 MiB leaves room for a few hundred thousand tensors.
MAX_HEADER_BYTES = 32 << 20

#: The safetensors dtypes squeezer writes (and so reads): code -> (torch dtype name, bytes per element).
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
#: Other dtypes safetensors knows, named in the error that refuses them.
OTHER_DTYPES = {
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu", "F4": "float4_e2m1fn_x2",
    "F6_E2M3": "float6_e2m3", "F6_E3M2": "float6_e3m2",
}
CHUNK = 1 << 20
MAX_DIMS = 64  # torch's own limit is lower; a longer shape list is not a tensor


@attrs.frozen
class TensorEntry:
    """One tensor of a safetensors header: ``nbytes`` bytes at absolute file offset ``start``."""

    name: str
    dtype: str  # torch's name: "float32", "uint8", ...
    shape: tuple[int, ...]
    start: int
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class SafetensorsFile:
    """An open safetensors file with a checked header; close it (or use ``with``)."""

    def __init__(self, path: str, handle: io.BufferedReader, size: int, metadata: dict[str, str] | None,
                 tensors: dict[str, TensorEntry], error: ErrorType) -> None:
        self.path, self.size, self.metadata, self.tensors = path, size, metadata, tensors
        self._handle, self._error = handle, error

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def chunks(self, entry: TensorEntry, size: int = CHUNK) -> Iterator[bytes]:
        """The bytes of ``entry``, ``size`` at a time."""
        self._handle.seek(entry.start)
        left = entry.nbytes
        while left:
            block = self._read(min(size, left))
            left -= len(block)
            yield block

    def readinto(self, entry: TensorEntry, buffer: memoryview) -> None:
        """Fill ``buffer`` (exactly ``entry.nbytes`` long) with the bytes of ``entry``."""
        if buffer.nbytes != entry.nbytes:
            raise ValueError(f"buffer of {buffer.nbytes} bytes for {entry.nbytes}")
        self._handle.seek(entry.start)
        view, done = buffer.cast("B"), 0
        while done < entry.nbytes:
            try:
                n = self._handle.readinto(view[done:])
            except OSError as exc:
                raise self._error(f"{self.path}: cannot read: {exc.strerror or exc}") from None
            if not n:
                raise self._error(f"{self.path}: truncated while reading (the file changed?)")
            done += n

    def tensor(self, entry: TensorEntry) -> Any:
        """``entry`` read into a new torch tensor (torch is imported here, not by this module)."""
        import torch

        t = torch.empty(entry.shape, dtype=getattr(torch, entry.dtype))  # a name from DTYPES only
        if entry.nbytes:
            array: Any = t.reshape(-1).view(torch.uint8).numpy()  # a buffer; numpy's stubs do not say so
            self.readinto(entry, memoryview(array))
        return t

    def _read(self, n: int) -> bytes:
        try:
            block = self._handle.read(n)
        except OSError as exc:
            raise self._error(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        if not block:
            raise self._error(f"{self.path}: truncated while reading (the file changed?)")
        return block


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice")
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def open_safetensors(path: StrPath, what: str = "file", error: ErrorType = ArtifactError) -> SafetensorsFile:
    """Open ``path`` and check its safetensors header; reads the header only.

    Checked: an 8-byte little-endian header length of at most :data:`MAX_HEADER_BYTES` that fits
    the file; the header is a JSON object without duplicate keys; ``__metadata__`` (optional) maps
    strings to strings; every tensor has a supported dtype (:data:`DTYPES`), a shape of
    non-negative integers and ``data_offsets`` holding exactly ``prod(shape) * itemsize`` bytes;
    the tensors tile the data section without gaps or overlaps and end exactly at the end of file.
    """
    name = os.fspath(path)
    handle = open_regular(path, what, error)
    try:
        size = os.fstat(handle.fileno()).st_size
        metadata, tensors = _header(name, handle, size, what, error)
        return SafetensorsFile(name, handle, size, metadata, tensors, error)
    except BaseException:
        handle.close()
        raise


def _header(name: str, handle: io.BufferedReader, size: int, what: str,
            error: ErrorType) -> tuple[dict[str, str] | None, dict[str, TensorEntry]]:
    def bad(reason: str) -> SqueezerError:
        return error(f"{name}: not a readable safetensors {what} ({reason})")

    try:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise bad(f"{size} bytes, too short for a header")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_BYTES:
            raise bad(f"header of {n:,} bytes, more than the {MAX_HEADER_BYTES:,} allowed")
        if n > size - 8:
            raise bad(f"header of {n:,} bytes in a file of {size:,}: truncated")
        raw = handle.read(n)
    except OSError as exc:
        raise error(f"{name}: cannot read {what}: {exc.strerror or exc}") from None
    if len(raw) != n:
        raise bad("truncated header")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise bad(f"header is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad("header is not a JSON object")
    metadata = doc.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise bad("__metadata__ must map strings to strings")
    data_start = 8 + n
    tensors: dict[str, TensorEntry] = {}
    for key, info in doc.items():
        tensors[key] = _entry(key, info, data_start, bad, name, what, error)
    end = data_start
    for entry in sorted(tensors.values(), key=lambda e: (e.start, e.nbytes)):
        if entry.start != end:
            raise bad(f"tensor {entry.name!r} starts at byte {entry.start - data_start} of the data, "
                      f"not {end - data_start}: gap or overlap")
        end = entry.start + entry.nbytes
    if end != size:
        raise bad(f"the tensors end at byte {end:,} of a {size:,}-byte file")
    return metadata, tensors


def _entry(key: str, info: Any, data_start: int, bad: Any, name: str, what: str, error: ErrorType) -> TensorEntry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {key!r} must have exactly dtype, shape and data_offsets")
    code = info["dtype"]
    if not isinstance(code, str):
        raise bad(f"tensor {key!r} has a dtype that is not a string")
    if code not in DTYPES:
        known = OTHER_DTYPES.get(code)
        dtype = f"{known} ({code})" if known else repr(code)
        supported = ", ".join(t for t, _ in DTYPES.values())
        raise error(f"{name}: tensor {key!r} has dtype {dtype}, which a squeezer {what} never holds "
                    f"(supported: {supported}); refusing the file")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad(f"tensor {key!r} has a shape that is not a list of at most {MAX_DIMS} non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise bad(f"tensor {key!r} has invalid data_offsets")
    torch_name, itemsize = DTYPES[code]
    entry = TensorEntry(key, torch_name, tuple(shape), data_start + offsets[0], offsets[1] - offsets[0])
    if entry.numel * itemsize != entry.nbytes:
        raise bad(f"tensor {key!r}: {entry.nbytes:,} bytes for shape {shape} of {torch_name}")
    return entry
