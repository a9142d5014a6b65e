"""Fake-quantizer modules: LSQ (learned step) and a min-max observer baseline.

Both quantize a tensor ``v`` onto the symmetric integer grid ``[-Qn, Qp]`` scaled by a step ``s``::

    v_hat = round(clip(v / s, -Qn, Qp)) * s

so 0 always maps to exactly 0 (pruned weights stay pruned), and ``quantize(v)`` returns the integer
codes and the scale with ``codes * scale == forward(v)`` bitwise (the same float operations run
in the same order).

Straight-through tricks are written so that the *forward value* is exact: ``a.detach() + (b -
b.detach())`` equals ``a`` bitwise (``b - b`` is exactly 0 for finite ``b``) while its gradient is
that of ``b``. The paper's ``(y - y_grad).detach() + y_grad`` has the same gradient but may be off
by an ulp in value, which would break ``codes * scale == forward(v)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from squeezer.compress import bitmask
from squeezer_lsq.config import MAX_BITS, MIN_BITS, grid_limits

#: smallest step used in forward (the learned parameter may be pushed to or below 0 by an optimizer)
MIN_STEP = 1e-8
#: step used when a tensor has no nonzero entry to initialize from (any step maps 0 to 0)
FALLBACK_STEP = 1.0


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def fake_quantize(v: torch.Tensor, s: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    """``round(clip(v / s, -qn, qp)) * s`` with a straight-through estimator for ``round``.

    Gradients: w.r.t. ``v``, the upstream gradient where ``-qn <= v/s <= qp`` and 0 where clipped;
    w.r.t. ``s``, ``round(v/s) - v/s`` inside the range and ``-qn`` / ``qp`` where clipped (the LSQ
    closed form; at an exact tie ``v/s == qp`` torch.clamp counts the element as inside).
    """
    x = torch.clamp(v / s, -qn, qp)
    return (x.round().detach() + (x - x.detach())) * s


def lsq_step(step: torch.Tensor, grad_scale: float, dtype: torch.dtype) -> torch.Tensor:
    """The step used in forward: ``max(step, MIN_STEP)`` in value, gradient ``grad_scale`` to ``step``.

    This is LSQ's ``grad_scale(s, g)``. The floor is straight-through, so a step pushed below it
    still receives gradient and can recover.
    """
    if step.dtype != dtype:
        step = step.to(dtype)
    floor = max(MIN_STEP, torch.finfo(dtype).tiny)
    scaled = step * grad_scale
    return step.detach().clamp_min(floor) + (scaled - scaled.detach())


def _codes_dtype(qn: int, qp: int) -> torch.dtype:
    return torch.int8 if -qn >= -128 and qp <= 127 else torch.int16


def _step_shape(shape: torch.Size, per_channel: bool) -> tuple[int, ...]:
    if per_channel and len(shape) >= 1:
        return (shape[0],) + (1,) * (len(shape) - 1)
    return ()


class GridFakeQuantizer(nn.Module):
    """Shared base: the integer grid ``[-qn, qp]`` of ``bits`` bits, carried by the state_dict.

    ``bits``, ``qn`` and ``qp`` are python ints (fast, no device sync); the buffers ``n_bits``,
    ``q_neg`` and ``q_pos`` carry them in the state_dict, and loading a state_dict updates the ints.
    """

    n_bits: torch.Tensor
    q_neg: torch.Tensor
    q_pos: torch.Tensor

    def __init__(self, *, bits: int, signed: bool, per_channel: bool) -> None:
        super().__init__()
        _check_bits(bits)
        self.per_channel = bool(per_channel)
        qn, qp = grid_limits(bits, bool(signed))
        self.register_buffer("n_bits", torch.tensor(bits, dtype=torch.int64))
        self.register_buffer("q_neg", torch.tensor(qn, dtype=torch.int64))
        self.register_buffer("q_pos", torch.tensor(qp, dtype=torch.int64))
        self.bits, self.qn, self.qp = bits, qn, qp

    @property
    def signed(self) -> bool:
        return self.qn > 0

    def _sync_from_buffers(self) -> None:
        self.bits, self.qn, self.qp = int(self.n_bits), int(self.q_neg), int(self.q_pos)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        bits, qn, qp = int(self.n_bits), int(self.q_neg), int(self.q_pos)
        valid = MIN_BITS <= bits <= MAX_BITS and (qn, qp) in (
            grid_limits(bits, True),
            grid_limits(bits, False),
        )
        if not valid:
            error_msgs.append(f"{prefix}: inconsistent quantizer grid bits={bits}, qn={qn}, qp={qp}")
            self.n_bits.fill_(self.bits)
            self.q_neg.fill_(self.qn)
            self.q_pos.fill_(self.qp)
            return
        self._sync_from_buffers()
        self._after_load()

    def _after_load(self) -> None:
        """Hook for subclasses: recompute derived python values after a state_dict load."""

    def scale(self, v: torch.Tensor) -> torch.Tensor:
        """The step applied to ``v`` (broadcastable to it, of its dtype)."""
        raise NotImplementedError

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return fake_quantize(v, self.scale(v), self.qn, self.qp)

    @torch.no_grad()
    def quantize(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer ``codes`` and ``scale`` with ``codes * scale == self(v)`` bitwise.

        ``codes`` are int8 (int16 for the unsigned 8-bit grid); ``scale`` broadcasts to ``v``.
        """
        s = self.scale(v).detach()
        codes = torch.clamp(v / s, -self.qn, self.qp).round()
        return codes.to(_codes_dtype(self.qn, self.qp)), s

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, per_channel={self.per_channel}"


def _init_step(weight: torch.Tensor, per_channel: bool, qp: int) -> torch.Tensor:
    """LSQ's ``2 * mean(|w|) / sqrt(Qp)``, the mean taken over the nonzero entries of ``weight``.

    The quantizer is built from the *masked* weight: at 95 % sparsity a mean over all entries
    would be ~20x too small, putting nearly every kept weight in the clipped range of a step
    that fits the zeros. A channel without nonzero entries falls back to the tensor's value
    (and an all-zero tensor to ``FALLBACK_STEP``); any step maps those zeros to 0.
    """
    w = weight.detach().float()
    a = w.abs()
    valid = (a != 0) & torch.isfinite(a)
    a = torch.where(valid, a, a.new_zeros(()))
    count = int(valid.sum())
    tensor_mean = float(a.sum()) / count if count else FALLBACK_STEP * math.sqrt(qp) / 2
    tensor_step = 2 * tensor_mean / math.sqrt(qp)
    shape = _step_shape(weight.shape, per_channel)
    if not shape:
        step = torch.tensor(tensor_step)
    else:
        channels = shape[0]
        sums = a.reshape(channels, -1).sum(1)
        counts = valid.reshape(channels, -1).sum(1)
        step = 2 * (sums / counts.clamp_min(1)) / math.sqrt(qp)
        step = torch.where(counts > 0, step, step.new_full((), tensor_step)).reshape(shape)
    step = step.clamp_min(MIN_STEP)
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    return step.to(dtype=dtype, device=weight.device)


class LsqFakeQuantizer(GridFakeQuantizer):
    """LSQ fake quantizer for one weight tensor with a learnable ``step`` (Esser et al., 2020).

    ``step`` has shape ``[]`` per tensor or ``[C, 1, ..., 1]`` per output channel (dim 0). Its
    gradient is scaled by ``grad_scale = 1 / sqrt(N * Qp)``, ``N`` the number of elements sharing
    a step (``numel`` per tensor, ``numel / C`` per channel).
    """

    def __init__(self, weight: torch.Tensor, *, bits: int = 4, signed: bool = True, per_channel: bool = True,
                 log_step: bool = False):
        super().__init__(bits=bits, signed=signed, per_channel=per_channel)
        self.per_channel = bool(per_channel) and weight.dim() >= 1
        step = _init_step(weight, self.per_channel, self.qp)
        #: the learned parameter: ``step``, or ``log_step`` (see :class:`~squeezer_lsq.config.LsqQuantizer`)
        self.log_step: nn.Parameter | None = nn.Parameter(step.log()) if log_step else None
        self.step: nn.Parameter | None = None if log_step else nn.Parameter(step)
        channels = weight.shape[0] if self.per_channel else 1
        self.elements_per_step = max(weight.numel() // max(channels, 1), 1)
        self._after_load()

    def _after_load(self) -> None:
        self.grad_scale = 1.0 / math.sqrt(self.elements_per_step * self.qp)

    def step_size(self) -> torch.Tensor:
        """The step ``s`` (with its gradient path to the learned parameter)."""
        if self.log_step is not None:
            return self.log_step.exp()
        assert self.step is not None
        return self.step

    def scale(self, v: torch.Tensor) -> torch.Tensor:
        return lsq_step(self.step_size(), self.grad_scale, v.dtype)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        step = self.step_size()
        if step.dtype != v.dtype:
            return fake_quantize(v, self.scale(v), self.qn, self.qp)
        floor = _FLOORS.get(v.dtype) or max(MIN_STEP, torch.finfo(v.dtype).tiny)
        out: torch.Tensor = _LsqFakeQuantize.apply(v, step, self.grad_scale, floor, self.qn, self.qp)
        return out


_FLOORS = {dtype: max(MIN_STEP, torch.finfo(dtype).tiny) for dtype in (torch.float32, torch.float64)}


class _LsqFakeQuantize(torch.autograd.Function):
    """``fake_quantize(v, lsq_step(step, grad_scale, v.dtype), qn, qp)`` as one autograd node.

    The forward runs the composition's float operations in the same order, so its value is
    bitwise the composition's. The backward is LSQ's closed form (Esser et al., eq. 3 and the
    straight-through estimator) evaluated directly rather than by the chain rule through about
    fifteen nodes: ``dv_hat/dv = 1`` where ``-Qn <= v/s <= Qp`` and 0 where clipped, and
    ``dv_hat/ds = round(v/s) - v/s`` inside, ``-Qn`` or ``Qp`` where clipped. That is exact where
    the chain rule rounds (``(g * s) / s``), and it saves only that derivative and the "inside"
    mask for backward: three elementwise passes instead of about nine.
    """

    @staticmethod
    def forward(
        ctx: Any, v: torch.Tensor, step: torch.Tensor, grad_scale: float, floor: float, qn: int, qp: int
    ) -> torch.Tensor:
        scaled = step * grad_scale
        s = step.clamp_min(floor) + (scaled - scaled)  # lsq_step's value
        q = v / s
        x = q.clamp(-qn, qp)
        inside = x == q  # -qn <= q <= qp (False for NaN), where clamp passes the gradient
        # fake_quantize's (round(x) + (x - x)) * s: x - x is +0.0 (x is finite or NaN), and
        # adding it turns a rounded -0.0 into +0.0 as the composition does
        a = x.round_().add_(0.0)
        out = a * s
        inside_bits = bitmask.bits(inside, v.dtype)  # masks by bitwise AND: torch.where is slow on CPU
        assert inside_bits is not None  # the fused node runs for float32 and float64 (_FLOORS)
        # dv_hat/ds: a - q inside, a where clipped (q masked to +0.0 there: a - 0.0 == a)
        ds = a.sub_(bitmask.keep(q, inside_bits)) if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(ds, inside_bits)
        ctx.step_shape, ctx.grad_scale = s.shape, grad_scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ds, inside_bits = ctx.saved_tensors
        grad_v = grad_step = None
        if ctx.needs_input_grad[0]:
            grad_v = bitmask.keep(grad, inside_bits)
        if ctx.needs_input_grad[1]:
            grad_step = (grad * ds).sum_to_size(ctx.step_shape) * ctx.grad_scale
        return grad_v, grad_step, None, None, None, None


class MinMaxFakeQuantizer(GridFakeQuantizer):
    """Min-max observer baseline: step ``max|v| / Qp`` (per tensor or per channel), recomputed every call.

    Signed: the largest magnitude maps to ``±Qp``; unsigned: the largest positive value maps to
    ``Qp`` and negatives clip to 0. The step is not learned; ``v`` gets a straight-through gradient.
    """

    def __init__(self, weight: torch.Tensor, *, bits: int = 8, signed: bool = True, per_channel: bool = True):
        super().__init__(bits=bits, signed=signed, per_channel=per_channel)
        self.per_channel = bool(per_channel) and weight.dim() >= 1

    @torch.no_grad()
    def scale(self, v: torch.Tensor) -> torch.Tensor:
        a = v.detach().abs() if self.signed else v.detach().clamp_min(0)
        shape = _step_shape(v.shape, self.per_channel)
        peak = a.reshape(shape[0], -1).amax(1).reshape(shape) if shape else a.amax()
        s = peak / self.qp
        return torch.where(s > 0, s, s.new_full((), FALLBACK_STEP))
