"""squeezer.compress.bitmask: masking by bitwise AND is ``torch.where``, bit for bit, gradients included."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from squeezer.compress.bitmask import blend, masked

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
specials = st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, -3.5])
values = st.lists(st.one_of(st.floats(allow_nan=True, width=32), specials), min_size=1, max_size=24)


def _bits(t: torch.Tensor) -> torch.Tensor:
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(ints)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (so NaN == NaN and -0.0 != +0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


@given(data=st.data(), v=values, dtype=st.sampled_from(DTYPES), transpose=st.booleans())
def test_masked_and_blend_equal_torch_where(data: st.DataObject, v: list[float], dtype: torch.dtype,
                                            transpose: bool) -> None:
    n = len(v)
    t = torch.tensor(v, dtype=torch.float64).to(dtype)
    other = torch.tensor(data.draw(st.lists(st.one_of(st.floats(width=32), specials), min_size=n, max_size=n)),
                         dtype=torch.float64).to(dtype)
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    up = torch.tensor(data.draw(st.lists(st.one_of(st.floats(width=32), specials), min_size=n, max_size=n)),
                      dtype=torch.float64).to(dtype)
    if transpose and n % 2 == 0:  # a non-contiguous weight (a transposed view)
        t, other, up = (x.reshape(2, -1).t() for x in (t, other, up))
        mask = mask.reshape(2, -1).t()

    a = t.clone().requires_grad_(True)
    b = t.clone().requires_grad_(True)
    got, expected = masked(mask, a), torch.where(mask, b, b.new_zeros(()))
    assert _same(got, expected)
    (got * 1).backward(up)
    (expected * 1).backward(up)
    assert _same(a.grad, b.grad)  # 0 where pruned even for NaN/Inf upstream

    a = other.clone().requires_grad_(True)
    b = other.clone().requires_grad_(True)
    got, expected = blend(mask, t, a), torch.where(mask, t.detach(), b)
    assert _same(got, expected)
    got.backward(up)
    expected.backward(up)
    assert _same(a.grad, b.grad)
