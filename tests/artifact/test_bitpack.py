import tracemalloc

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from squeezer.artifact import bitpack
from squeezer.artifact.bitpack import MAX_BITS, MAX_PACK_BITS, pack_bits, packed_size, unpack_bits

DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


@st.composite
def packable(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Unsigned codes of every width 1..16, any length (so every tail of a group of eight), stored
    in any integer dtype wide enough (signed or not)."""
    bits = draw(st.integers(1, MAX_BITS))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=300))
    dtype = draw(st.sampled_from([d for d in DTYPES if np.iinfo(d).max >= (1 << bits) - 1]))
    return np.array(values, dtype=dtype), bits


@given(packable())
@example((np.zeros(0, dtype=np.int64), 2))
@example((np.array([3], dtype=np.int64), 2))
@example((np.array([255], dtype=np.int64), 8))
def test_round_trip(case: tuple[np.ndarray, int]) -> None:
    values, bits = case
    packed = pack_bits(values, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_size(values.size, bits) == (values.size * bits + 7) // 8
    out = unpack_bits(packed, bits, values.size)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, values.astype(np.int64))


@given(st.integers(1, MAX_BITS), st.lists(st.integers(0, 1 << 16), max_size=200))
def test_signed_codes_round_trip_through_their_offset(bits: int, raw: list[int]) -> None:
    """Signed codes in [-2**(b-1), 2**(b-1)) are stored as ``code + 2**(b-1)`` (what the writer does)."""
    offset = 1 << (bits - 1)
    codes = np.array([r % (1 << bits) - offset for r in raw], dtype=np.int64)
    packed = pack_bits(codes + offset, bits)
    np.testing.assert_array_equal(unpack_bits(packed, bits, codes.size) - offset, codes)


@given(st.integers(MAX_BITS + 1, MAX_PACK_BITS), st.lists(st.integers(0, (1 << 56) - 1), max_size=40))
def test_wide_fields_round_trip(bits: int, raw: list[int]) -> None:
    """Fields wider than a code (the mask coder's Rice remainders) use 64-bit windows."""
    values = np.array([r % (1 << bits) for r in raw], dtype=np.int64)
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, bits), bits, values.size), values)


@given(st.integers(1, MAX_BITS), st.lists(st.integers(0, 1 << 16), max_size=100))
def test_layout_is_the_bit_string_msb_first(bits: int, raw: list[int]) -> None:
    """The format's definition, written per bit: value i's bit k (MSB first) is bit i*b + k of the
    stream, and the stream is numpy's packbits order."""
    values = np.array([r % (1 << bits) for r in raw], dtype=np.int64)
    stream = [(int(v) >> (bits - 1 - k)) & 1 for v in values for k in range(bits)]
    assert pack_bits(values, bits).tolist() == np.packbits(np.array(stream, dtype=np.uint8)).tolist()


@pytest.mark.parametrize("bits", range(2, 17))
def test_round_trip_large(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=100_003)
    packed = pack_bits(values.astype(np.uint16), bits)
    assert packed.size == (values.size * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, bits, values.size), values)


def test_msb_first_layout() -> None:
    # 2-bit values 1, 2, 3, 0 -> 01 10 11 00
    assert pack_bits(np.array([1, 2, 3, 0]), 2).tolist() == [0b01101100]
    # padding bits are zero
    assert pack_bits(np.array([7]), 3).tolist() == [0b11100000]


@pytest.mark.parametrize(
    ("values", "bits"),
    [([4], 2), ([-1], 3), ([0.5], 4), ([0], 0), ([0], MAX_PACK_BITS + 1), ([0], True)],
)
def test_rejects_what_does_not_fit(values: list[float], bits: int) -> None:
    with pytest.raises(ValueError):
        pack_bits(np.array(values), bits)


def test_unpack_checks_length() -> None:
    packed = pack_bits(np.arange(8), 3)
    with pytest.raises(ValueError, match="bytes"):
        unpack_bits(packed[:-1], 3, 8)
    with pytest.raises(ValueError, match="bytes"):
        unpack_bits(packed, 3, 9)


# --- linear time, no per-bit temporaries ----------------------------------------------------------


def test_packing_never_expands_to_one_element_per_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The algorithm's structure: neither direction calls numpy's per-bit (un)packing, and the work
    is a fixed number (at most 8 classes x 8 bytes) of whole-array operations, independent of n."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("per-bit temporary")

    monkeypatch.setattr(np, "packbits", refuse)
    monkeypatch.setattr(np, "unpackbits", refuse)
    values = np.arange(1001) % 8
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, 3), 3, values.size), values)
    layouts = [bitpack._class_layout(b, r, bitpack._window(b)[1]) for b in range(1, MAX_PACK_BITS + 1)
               for r in range(bitpack.GROUP)]
    assert max(touched for _, touched, _ in layouts) <= 8


def _peak(fn: object, *args: object) -> int:
    tracemalloc.start()
    try:
        fn(*args)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 12, 16])
def test_memory_is_the_output_plus_one_class_of_values(bits: int) -> None:
    """Packing n codes allocates the packed bytes plus 1.125 n bytes of scratch (a window and a
    shifted copy, n/8 32-bit words each, and one byte column of n/8); a one-byte-per-bit temporary
    alone would be n * bits bytes (the former implementation: 137 MiB for 4 M 4-bit codes).
    Unpacking allocates its int64 output plus n bytes of windows."""
    n = 1 << 20
    values = np.random.default_rng(bits).integers(0, 1 << bits, size=n)
    slack = 64 << 10
    packed = pack_bits(values, bits)
    assert _peak(pack_bits, values, bits) <= packed.nbytes + n + n // 8 + slack < packed.nbytes + n * bits
    assert _peak(unpack_bits, packed, bits, n) <= 8 * n + n + slack
