"""Masking by bitwise AND: ``torch.where(mask, t, 0)`` bitwise, several times faster on CPU.

On CPU ``torch.where`` with a boolean condition runs about 7x slower than a vectorized
elementwise op (1.2 ms against 0.17 ms for 1M float32 on the development machine, torch 2.13),
and masks are applied to every compressed weight in every forward and backward. Viewing the
floats as same-width integers and ANDing them with ``-1`` (kept) or ``0`` (pruned) gives the
same result bit for bit: kept entries keep their bits (``-0.0``, Inf and NaN included) and pruned
entries become ``+0.0`` even where the input held Inf or NaN.
"""

from __future__ import annotations

from typing import Any

import torch

_INT_OF = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
           torch.bfloat16: torch.int16}


def bits(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """``mask`` (bool) as integers of ``dtype``'s width, ``-1`` where True and ``0`` where False;
    ``None`` for a dtype without a same-width integer type."""
    int_dtype = _INT_OF.get(dtype)
    if int_dtype is None:
        return None
    return mask.view(torch.uint8).to(int_dtype).neg_()


def keep(t: torch.Tensor, mask_bits: torch.Tensor) -> torch.Tensor:
    """``t`` where the mask is set, ``+0.0`` elsewhere (no autograd)."""
    return (t.view(mask_bits.dtype) & mask_bits).view(t.dtype)


class _Keep(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, mask_bits: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask_bits)
        return keep(t, mask_bits)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask_bits,) = ctx.saved_tensors
        return keep(grad, mask_bits), None


class _Blend(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, other: torch.Tensor, values: torch.Tensor, mask_bits: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask_bits)
        ints = mask_bits.dtype
        return ((values.view(ints) & mask_bits) | (other.view(ints) & ~mask_bits)).view(other.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask_bits,) = ctx.saved_tensors
        return keep(grad, ~mask_bits), None, None


def masked(mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, t, 0)``, bit for bit, gradient included (0 where the mask is unset)."""
    mask_bits = bits(mask, t.dtype)
    if mask_bits is None or t.shape != mask.shape:
        return torch.where(mask, t, t.new_zeros(()))
    out: torch.Tensor = _Keep.apply(t, mask_bits)
    return out


def blend(mask: torch.Tensor, values: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, values.detach(), other)``, bit for bit: the gradient reaches ``other``
    only where the mask is unset."""
    mask_bits = bits(mask, other.dtype)
    if mask_bits is None or values.dtype != other.dtype or not values.shape == other.shape == mask.shape:
        return torch.where(mask, values.detach(), other)
    out: torch.Tensor = _Blend.apply(other, values.detach(), mask_bits)
    return out
