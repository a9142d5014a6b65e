"""Pack unsigned ``b``-bit integers densely into bytes (most significant bit first), vectorized.

``pack_bits(values, b)`` writes ``len(values) * b`` bits, padded with zero bits to a whole byte;
``unpack_bits(data, b, count)`` reads them back. ``b`` may be 1..16.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MAX_BITS = 16


def packed_size(count: int, bits: int) -> int:
    """Bytes :func:`pack_bits` writes for ``count`` values of ``bits`` bits."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")


def _weights(bits: int) -> npt.NDArray[np.int64]:
    return np.left_shift(np.int64(1), np.arange(bits - 1, -1, -1, dtype=np.int64))


def pack_bits(values: npt.ArrayLike, bits: int) -> npt.NDArray[np.uint8]:
    """Pack the non-negative integers ``values`` (each ``< 2**bits``) into a ``uint8`` array."""
    _check_bits(bits)
    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"values must be integers, got {v.dtype}")
    v64 = v.astype(np.int64, copy=False)
    if int(v64.min()) < 0 or int(v64.max()) >= (1 << bits):
        raise ValueError(f"values must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return v64.astype(np.uint8)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    matrix = ((v64[:, None] >> shifts) & 1).astype(np.uint8)  # (n, bits), MSB first
    return np.packbits(matrix.reshape(-1))


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
    flat = np.unpackbits(buf, count=count * bits)
    return flat.reshape(count, bits).astype(np.int64) @ _weights(bits)
