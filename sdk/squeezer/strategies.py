"""The contracts a strategy implements, one protocol per extension point.

Strategies are attrs classes: their fields are the options a recipe may set. These protocols are
structural, so a plugin needs no base class; ``squeezer.testing`` checks conformance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class Importance(Protocol):
    """Scores weights; the lowest scores are pruned first.

    ``needs_gradients``: when true the core accumulates ``dL/dw`` over calibration batches and
    passes it as ``grad`` (e.g. first-order Taylor importance).
    """

    needs_gradients: bool

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        """Return a float score tensor of ``weight.shape``; higher means more important."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """Decides the target sparsity of each pruning round."""

    target: float

    def sparsities(self) -> list[float]:
        """Target sparsity per round: non-decreasing, in [0, 1], ending at ``target``."""
        ...


@runtime_checkable
class FakeQuantizer(Protocol):
    """The module a :class:`Quantizer` builds for one weight tensor (an ``nn.Module``)."""

    bits: int

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        """Fake-quantize: same shape and dtype, 0 maps to 0, gradients pass (e.g. STE)."""
        ...

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return integer ``codes`` and a broadcastable ``scale`` with ``codes * scale == self(weight)``."""
        ...


@runtime_checkable
class Quantizer(Protocol):
    """Configures how one weight tensor is quantized."""

    bits: int

    def build(self, weight: torch.Tensor) -> nn.Module:
        """Return a :class:`FakeQuantizer` module for ``weight``, initialized from it."""
        ...


@runtime_checkable
class DistillationLoss(Protocol):
    """A loss pulling ``student_logits`` towards (already detached) ``teacher_logits``."""

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Return a scalar loss."""
        ...
