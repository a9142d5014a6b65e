"""Compact codings of a boolean mask, and its entropy bound.

Two codings, the smaller chosen per mask (:func:`encode_mask`):

- ``bitmap``: one bit per position (``np.packbits``), ``ceil(n / 8)`` bytes; best near density 1/2.
- ``rice``: the positions of the *minority* value (kept positions, or pruned ones when more than
  half are kept, then ``inverted``) as the gaps between them, each gap ``g`` Golomb-Rice coded
  with parameter ``k``: the quotient ``g >> k`` in unary (that many 0 bits, then a 1) and the
  remainder in ``k`` plain bits. For i.i.d. masks gaps are geometric, for which Rice codes are
  within a few percent of the entropy ``n * H(density)``. ``k`` is the one that minimises the
  exact coded length (tried over every useful ``k``). All remainders come first (fixed width,
  so :mod:`~squeezer.artifact.bitpack` reads them), then all unary quotients, which makes both
  directions vectorized: the quotients are the gaps between the 1 bits of the unary part.

Decoding needs ``n`` and ``nnz`` (the number of kept positions), which the artifact records.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import numpy as np
import numpy.typing as npt

from squeezer.artifact.bitpack import pack_bits, packed_size, unpack_bits

Coding = Literal["bitmap", "rice"]
CODINGS: tuple[Coding, ...] = ("bitmap", "rice")

BoolArray = npt.NDArray[np.bool_]
ByteArray = npt.NDArray[np.uint8]


class MaskCodeError(ValueError):
    """A mask payload does not decode to a mask of the recorded size and count."""


def binary_entropy(p: float) -> float:
    """``H(p)`` in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def entropy_bits(numel: int, nnz: int) -> float:
    """The information bound ``n * H(nnz / n)`` (bits) of a mask with ``nnz`` of ``n`` kept."""
    return numel * binary_entropy(nnz / numel) if numel else 0.0


@attrs.frozen
class MaskCode:
    """A coded mask: ``payload`` and the parameters needed to decode it."""

    coding: Coding
    payload: ByteArray = attrs.field(eq=False)
    rice_k: int | None = None
    inverted: bool = False


# --- bitmap -----------------------------------------------------------------------------------


def encode_bitmap(mask: npt.ArrayLike) -> ByteArray:
    return np.packbits(np.asarray(mask, dtype=bool).reshape(-1))


def decode_bitmap(payload: npt.ArrayLike, numel: int) -> BoolArray:
    buf = np.asarray(payload, dtype=np.uint8).reshape(-1)
    if buf.size != (numel + 7) // 8:
        raise MaskCodeError(f"bitmap of {numel} positions needs {(numel + 7) // 8} bytes, got {buf.size}")
    bits = np.unpackbits(buf)
    if bits[numel:].any():
        raise MaskCodeError("bitmap has nonzero padding bits")
    return bits[:numel].astype(bool)


# --- rice ---------------------------------------------------------------------------------------


def _gaps(positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Zeros before each listed position since the previous one."""
    if positions.size == 0:
        return positions
    return np.diff(positions, prepend=np.int64(-1)) - 1


def rice_bits(gaps: npt.NDArray[np.int64], k: int) -> int:
    """Exact length in bits of the Rice code of ``gaps`` with parameter ``k``."""
    return int((gaps >> k).sum()) + gaps.size * (k + 1)


def best_rice_k(gaps: npt.NDArray[np.int64]) -> int:
    """The ``k`` giving the shortest code (ties: the smallest)."""
    if gaps.size == 0:
        return 0
    top = max(int(gaps.max()).bit_length(), 1)
    costs = [rice_bits(gaps, k) for k in range(top + 1)]
    return int(np.argmin(costs))


def encode_rice(mask: npt.ArrayLike, inverted: bool | None = None) -> MaskCode:
    """Rice-code the positions of the minority value (or of ``~mask`` when ``inverted``)."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    if inverted is None:
        inverted = 2 * int(flat.sum()) > flat.size
    positions = np.flatnonzero(~flat if inverted else flat).astype(np.int64)
    gaps = _gaps(positions)
    k = best_rice_k(gaps)
    if gaps.size == 0:
        return MaskCode("rice", np.zeros(0, dtype=np.uint8), k, inverted)
    quotients = gaps >> k
    remainder_bits = np.zeros(0, dtype=np.uint8)
    if k:
        remainders = gaps & ((1 << k) - 1)
        remainder_bits = np.unpackbits(pack_bits(remainders, k), count=gaps.size * k)
    unary = np.zeros(int(quotients.sum()) + gaps.size, dtype=np.uint8)
    unary[np.cumsum(quotients + 1) - 1] = 1  # each quotient: that many 0 bits, then a 1
    payload = np.packbits(np.concatenate([remainder_bits, unary]))
    return MaskCode("rice", payload, k, inverted)


def decode_rice(payload: npt.ArrayLike, numel: int, count: int, k: int, inverted: bool) -> BoolArray:
    """Decode ``count`` Rice-coded positions into a mask of ``numel`` positions."""
    buf = np.asarray(payload, dtype=np.uint8).reshape(-1)
    if not 0 <= count <= numel or not 0 <= k <= max(numel.bit_length(), 1):
        raise MaskCodeError(f"invalid rice parameters: count={count}, numel={numel}, k={k}")
    out = np.zeros(numel, dtype=bool)
    if count:
        bits = np.unpackbits(buf)
        n_rem = count * k
        if bits.size < n_rem + count:
            raise MaskCodeError("rice payload is too short")
        remainders = unpack_bits(np.packbits(bits[:n_rem]), k, count) if k else np.zeros(count, np.int64)
        ones = np.flatnonzero(bits[n_rem:])
        if ones.size < count:
            raise MaskCodeError("rice payload holds fewer positions than recorded")
        end = int(ones[count - 1]) + 1
        if bits[n_rem + end :].any() or buf.size != (n_rem + end + 7) // 8:
            raise MaskCodeError("rice payload has trailing data")
        quotients = np.diff(ones[:count], prepend=np.int64(-1)) - 1
        if int(quotients.max()) > numel >> k:  # a gap longer than the mask (also keeps int64 exact)
            raise MaskCodeError(f"rice payload points past the {numel} positions of the mask")
        gaps = (quotients.astype(np.int64) << k) | remainders
        positions = np.cumsum(gaps + 1) - 1
        if int(positions[-1]) >= numel:
            raise MaskCodeError(f"rice payload points past the {numel} positions of the mask")
        out[positions] = True
    elif buf.size:
        raise MaskCodeError("rice payload of an empty position list must be empty")
    return ~out if inverted else out


# --- choice ---------------------------------------------------------------------------------------


def encode_mask(mask: npt.ArrayLike) -> MaskCode:
    """Code ``mask`` with whichever of bitmap and Rice gives fewer bytes (bitmap on ties)."""
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    rice = encode_rice(flat)
    if rice.payload.size < packed_size(flat.size, 1):
        return rice
    return MaskCode("bitmap", encode_bitmap(flat))


def decode_mask(code: MaskCode, numel: int, nnz: int) -> BoolArray:
    """Decode ``code`` into a flat mask of ``numel`` positions with ``nnz`` of them kept."""
    if code.coding == "bitmap":
        out = decode_bitmap(code.payload, numel)
    elif code.coding == "rice":
        if code.rice_k is None:
            raise MaskCodeError("rice coding needs its parameter k")
        count = numel - nnz if code.inverted else nnz
        out = decode_rice(code.payload, numel, count, code.rice_k, code.inverted)
    else:
        raise MaskCodeError(f"unknown mask coding {code.coding!r}")
    if int(out.sum()) != nnz:
        raise MaskCodeError(f"mask decodes to {int(out.sum())} kept positions, {nnz} recorded")
    return out
