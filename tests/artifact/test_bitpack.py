import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from squeezer.artifact.bitpack import pack_bits, packed_size, unpack_bits


@st.composite
def packable(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    bits = draw(st.integers(1, 16))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=300))
    return np.array(values, dtype=np.int64), bits


@given(packable())
@example((np.zeros(0, dtype=np.int64), 2))
@example((np.array([3], dtype=np.int64), 2))
@example((np.array([255], dtype=np.int64), 8))
def test_round_trip(case: tuple[np.ndarray, int]) -> None:
    values, bits = case
    packed = pack_bits(values, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_size(values.size, bits) == (values.size * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, bits, values.size), values)


@pytest.mark.parametrize("bits", range(2, 9))
def test_round_trip_large(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=1_000_003)
    packed = pack_bits(values.astype(np.uint8), bits)
    assert packed.size == (values.size * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, bits, values.size), values)


def test_msb_first_layout() -> None:
    # 2-bit values 1, 2, 3, 0 -> 01 10 11 00
    assert pack_bits(np.array([1, 2, 3, 0]), 2).tolist() == [0b01101100]
    # padding bits are zero
    assert pack_bits(np.array([7]), 3).tolist() == [0b11100000]


@pytest.mark.parametrize(
    ("values", "bits"),
    [([4], 2), ([-1], 3), ([0.5], 4), ([0], 0), ([0], 17)],
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
