"""Recipe options of the ``lsq`` and ``minmax`` weight quantizers.

These attrs classes are what the registry holds; they only describe a quantizer. ``build(weight)``
creates the fake-quantizer module (see :mod:`squeezer_lsq.modules`). torch is imported lazily so
that loading the plugin (e.g. to list strategies) does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # torch is imported lazily so that listing plugins stays instant
    import torch
    from torch import nn

MIN_BITS = 2
MAX_BITS = 8


def _check_bits(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(f"{attribute.name} must be in {MIN_BITS}..{MAX_BITS}, got {value!r}")


def _check_bool(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be true or false, got {value!r}")


def grid_limits(bits: int, signed: bool) -> tuple[int, int]:
    """``(Qn, Qp)``: the integer grid is ``[-Qn, Qp]``.

    Signed: ``Qn = 2**(b-1)``, ``Qp = 2**(b-1) - 1``; unsigned: ``Qn = 0``, ``Qp = 2**b - 1``.
    """
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@attrs.frozen(kw_only=True)
class _GridOptions:
    bits: int = attrs.field(default=4, validator=_check_bits, metadata={"help": "bit width, 2..8"})
    per_channel: bool = attrs.field(
        default=True,
        validator=_check_bool,
        metadata={"help": "one step size per output channel (dim 0) instead of one per tensor"},
    )
    signed: bool = attrs.field(
        default=True,
        validator=_check_bool,
        metadata={"help": "signed grid [-2^(b-1), 2^(b-1)-1]; unsigned grid [0, 2^b-1]"},
    )


@attrs.frozen(kw_only=True)
class LsqQuantizer(_GridOptions):
    """LSQ: learned step size quantization (Esser et al., ICLR 2020).

    The step size ``s`` is a trainable parameter, initialized to ``2 * mean(|w|) / sqrt(Qp)`` over
    the nonzero (unpruned) weights, and trained with the gradient scaled by ``1 / sqrt(N * Qp)``.
    With ``log_step`` the parameter is ``log s`` instead (as TQT, Jain et al. 2019, learns log
    thresholds): Adam moves a parameter by about its learning rate per step whatever the gradient's
    scale, so on ``s`` itself a fine grid (small ``s``: more bits) moves by a larger fraction of its
    step than a coarse one; on ``log s`` every step size moves by the same relative amount.
    """

    log_step: bool = attrs.field(
        default=False,
        validator=_check_bool,
        metadata={"help": "learn log(step) instead of step: updates relative to the step's size (scale-free "
                          "under Adam)"},
    )

    def build(self, weight: torch.Tensor) -> nn.Module:
        from squeezer_lsq.modules import LsqFakeQuantizer

        return LsqFakeQuantizer(weight, bits=self.bits, signed=self.signed, per_channel=self.per_channel,
                                log_step=self.log_step)


@attrs.frozen(kw_only=True)
class MinMaxQuantizer(_GridOptions):
    """Min-max observer: symmetric grid whose step is max|w| / Qp, recomputed every forward (not learned)."""

    def build(self, weight: torch.Tensor) -> nn.Module:
        from squeezer_lsq.modules import MinMaxFakeQuantizer

        return MinMaxFakeQuantizer(weight, bits=self.bits, signed=self.signed, per_channel=self.per_channel)
