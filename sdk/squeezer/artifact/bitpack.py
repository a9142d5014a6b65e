"""Pack unsigned ``b``-bit integers densely into bytes (most significant bit first), in linear time.

``pack_bits(values, b)`` writes ``len(values) * b`` bits, padded with zero bits to a whole byte;
``unpack_bits(data, b, count)`` reads them back. ``b`` may be 1..:data:`MAX_PACK_BITS` (codes
use up to :data:`MAX_BITS`; the mask coder's Rice remainders may be wider).

The values are taken in groups of eight: eight ``b``-bit values fill exactly ``b`` bytes, and the
``r``-th value of every group starts at the same bit (``r * b``) of its group. So each of the
eight residue classes is one shift-or over ``len(values) / 8`` values into (at most eight) byte
columns of the output, and reading is the same in reverse: time linear in the values, memory the
output plus one class of values at a time, never one byte per bit (``np.unpackbits``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: widest code an artifact stores
MAX_BITS = 16
#: widest field :func:`pack_bits` packs: a field at bit offset <= 7 still fits a 64-bit window
MAX_PACK_BITS = 56
#: values per group: ``GROUP`` values of ``b`` bits are ``b`` whole bytes
GROUP = 8


def packed_size(count: int, bits: int) -> int:
    """Bytes :func:`pack_bits` writes for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_PACK_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_PACK_BITS}, got {bits!r}")


def _window(bits: int) -> tuple[type[np.unsignedinteger], int]:
    """The integer type a field of ``bits`` bits at any bit offset (<= 7) fits in, and its width."""
    return (np.uint32, 32) if bits <= 32 - 7 else (np.uint64, 64)


def _class_layout(bits: int, r: int, width: int) -> tuple[int, int, int]:
    """Where the ``r``-th value of a group lies: its first byte in the group, the number of bytes
    it touches, and its left shift in a ``width``-bit window starting at that byte."""
    start = r * bits
    first, offset = start >> 3, start & 7
    touched = ((offset + bits - 1) >> 3) + 1
    return first, touched, width - offset - bits


def _pack_groups(groups: npt.NDArray[np.integer], bits: int) -> npt.NDArray[np.uint8]:
    """``(m, 8)`` values -> ``(m, bits)`` bytes: eight shift-ors over the residue classes."""
    kind, width = _window(bits)
    out = np.zeros((groups.shape[0], bits), dtype=np.uint8)
    window = np.empty(groups.shape[0], dtype=kind)
    scratch = np.empty(groups.shape[0], dtype=kind)
    byte = np.empty(groups.shape[0], dtype=np.uint8)
    for r in range(GROUP):
        first, touched, shift = _class_layout(bits, r, width)
        np.copyto(window, groups[:, r], casting="unsafe")  # checked: 0 <= value < 2**bits
        window <<= kind(shift)
        for j in range(touched):
            np.right_shift(window, kind(width - 8 - 8 * j), out=scratch)
            np.copyto(byte, scratch, casting="unsafe")  # the low byte
            out[:, first + j] |= byte
    return out


def _unpack_groups(groups: npt.NDArray[np.uint8], bits: int, out: npt.NDArray[np.int64]) -> None:
    """``(m, bits)`` bytes -> ``out``, ``(m, 8)`` values (the inverse of :func:`_pack_groups`)."""
    kind, width = _window(bits)
    mask = kind((1 << bits) - 1)
    window = np.empty(groups.shape[0], dtype=kind)
    scratch = np.empty(groups.shape[0], dtype=kind)
    for r in range(GROUP):
        first, touched, shift = _class_layout(bits, r, width)
        window[:] = 0
        for j in range(touched):
            scratch[:] = groups[:, first + j]
            scratch <<= kind(width - 8 - 8 * j)
            window |= scratch
        window >>= kind(shift)
        window &= mask
        out[:, r] = window


def pack_bits(values: npt.ArrayLike, bits: int) -> npt.NDArray[np.uint8]:
    """Pack the non-negative integers ``values`` (each ``< 2**bits``) into a ``uint8`` array."""
    _check_bits(bits)
    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"values must be integers, got {v.dtype}")
    if int(v.min()) < 0 or int(v.max()) >= (1 << bits):
        raise ValueError(f"values must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return v.astype(np.uint8)
    full = v.size - v.size % GROUP
    head = _pack_groups(v[:full].reshape(-1, GROUP), bits).reshape(-1)
    if full == v.size:
        return head
    tail = np.zeros(GROUP, dtype=v.dtype)  # the last, partial group, padded with zero values
    tail[: v.size - full] = v[full:]
    packed_tail = _pack_groups(tail.reshape(1, GROUP), bits).reshape(-1)
    return np.concatenate([head, packed_tail[: packed_size(v.size, bits) - head.size]])


def unpack_bits(data: npt.ArrayLike, bits: int, count: int) -> npt.NDArray[np.int64]:
    """Read ``count`` values of ``bits`` bits back from what :func:`pack_bits` wrote."""
    _check_bits(bits)
    buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    if count < 0 or buf.size != packed_size(count, bits):
        raise ValueError(
            f"expected {packed_size(max(count, 0), bits)} bytes for {count} values, got {buf.size}"
        )
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if bits == 8:
        return buf.astype(np.int64)
    full = count - count % GROUP
    out = np.empty(count, dtype=np.int64)
    _unpack_groups(buf[: full * bits // 8].reshape(-1, bits), bits, out[:full].reshape(-1, GROUP))
    if full < count:
        tail = np.zeros(bits, dtype=np.uint8)
        rest = buf[full * bits // 8 :]
        tail[: rest.size] = rest
        values = np.empty((1, GROUP), dtype=np.int64)
        _unpack_groups(tail.reshape(1, bits), bits, values)
        out[full:] = values[0, : count - full]
    return out
