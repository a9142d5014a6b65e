import time

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from squeezer.artifact.maskcode import (
    MaskCode,
    MaskCodeError,
    binary_entropy,
    decode_bitmap,
    decode_mask,
    decode_rice,
    encode_bitmap,
    encode_mask,
    encode_rice,
    entropy_bits,
)


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=4)))
    density = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).random(shape) < density


ALL_TRUE = np.ones((3, 4), dtype=bool)
ALL_FALSE = np.zeros((5,), dtype=bool)
ONE_TRUE = np.ones((1,), dtype=bool)
ONE_FALSE = np.zeros((1, 1), dtype=bool)
EMPTY = np.zeros((0, 3), dtype=bool)


@given(masks())
@example(ALL_TRUE)
@example(ALL_FALSE)
@example(ONE_TRUE)
@example(ONE_FALSE)
@example(EMPTY)
def test_both_codings_round_trip(mask: np.ndarray) -> None:
    flat = mask.reshape(-1)
    n, nnz = flat.size, int(flat.sum())
    np.testing.assert_array_equal(decode_bitmap(encode_bitmap(mask), n), flat)
    for inverted in (False, True, None):
        rice = encode_rice(mask, inverted=inverted)
        assert rice.coding == "rice"
        np.testing.assert_array_equal(decode_mask(rice, n, nnz), flat)
    chosen = encode_mask(mask)
    np.testing.assert_array_equal(decode_mask(chosen, n, nnz), flat)
    assert chosen.payload.size <= min(encode_bitmap(mask).size, encode_rice(mask).payload.size)


def test_constant_masks_cost_nothing_with_rice() -> None:
    for mask in (np.ones(10_000, dtype=bool), np.zeros(10_000, dtype=bool)):
        code = encode_mask(mask)
        assert code.coding == "rice"
        assert code.payload.size == 0


@pytest.mark.parametrize("n", [10_000, 200_000])
@pytest.mark.parametrize("density", [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.95])
def test_within_ten_percent_of_entropy(n: int, density: float) -> None:
    mask = np.random.default_rng(int(density * 1000) + n).random(n) < density
    code = encode_mask(mask)
    bound = entropy_bits(n, int(mask.sum()))
    assert code.payload.size * 8 <= 1.10 * bound
    assert code.payload.size * 8 >= bound - 64  # no coding beats the entropy by much on random masks


def test_choice_picks_bitmap_near_half_and_rice_when_sparse() -> None:
    rng = np.random.default_rng(0)
    assert encode_mask(rng.random(50_000) < 0.5).coding == "bitmap"
    assert encode_mask(rng.random(50_000) < 0.05).coding == "rice"
    dense = encode_mask(rng.random(50_000) < 0.97)
    assert dense.coding == "rice"
    assert dense.inverted


def test_binary_entropy() -> None:
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0
    assert binary_entropy(0.1) == pytest.approx(0.4689955935892812)
    assert entropy_bits(0, 0) == 0.0


def test_million_elements_is_fast() -> None:
    mask = np.random.default_rng(1).random(1_000_000) < 0.1
    start = time.perf_counter()
    code = encode_mask(mask)
    decoded = decode_mask(code, mask.size, int(mask.sum()))
    assert time.perf_counter() - start < 5.0  # about 10 ms in practice
    np.testing.assert_array_equal(decoded, mask)


def test_corrupt_payloads_raise_mask_code_error() -> None:
    mask = np.random.default_rng(2).random(1000) < 0.1
    nnz = int(mask.sum())
    rice = encode_rice(mask)
    assert rice.rice_k is not None
    with pytest.raises(MaskCodeError):
        decode_rice(rice.payload[:-3], mask.size, nnz, rice.rice_k, False)  # too short
    with pytest.raises(MaskCodeError):
        decode_rice(np.concatenate([rice.payload, [255]]), mask.size, nnz, rice.rice_k, False)  # trailing
    with pytest.raises(MaskCodeError):
        decode_rice(rice.payload, 10, nnz, rice.rice_k, False)  # more positions than the mask has
    with pytest.raises(MaskCodeError):
        decode_mask(rice, mask.size, nnz + 1)  # count disagrees with the record
    with pytest.raises(MaskCodeError):
        decode_bitmap(encode_bitmap(mask)[:-1], mask.size)
    with pytest.raises(MaskCodeError):
        decode_bitmap(np.full(2, 255, dtype=np.uint8), 9)  # nonzero padding
    with pytest.raises(MaskCodeError):
        decode_mask(MaskCode("rice", rice.payload, None), mask.size, nnz)


@given(st.binary(max_size=64), st.integers(0, 200), st.integers(0, 200), st.integers(0, 63), st.booleans())
def test_garbage_never_escapes_as_another_exception(
    payload: bytes, numel: int, count: int, k: int, inverted: bool
) -> None:
    data = np.frombuffer(payload, dtype=np.uint8)
    for code in (MaskCode("rice", data, k, inverted), MaskCode("bitmap", data)):
        try:
            out = decode_mask(code, numel, min(count, numel))
        except MaskCodeError:
            continue
        assert out.shape == (numel,)
        assert int(out.sum()) == min(count, numel)


def test_a_very_sparse_large_mask_codes_remainders_wider_than_a_code() -> None:
    """Gaps of ~10**6 give k = 19: the remainders are packed at 19 bits (the packer takes up to
    56; version 1 stopped at 16 and refused such a mask at export)."""
    mask = np.zeros(1 << 22, dtype=bool)
    mask[[5, 1_500_000, 4_000_000]] = True
    code = encode_mask(mask)
    assert (code.coding, code.rice_k) == ("rice", 19)
    assert code.payload.size == 9
    np.testing.assert_array_equal(decode_mask(code, mask.size, 3), mask)
