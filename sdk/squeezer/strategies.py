"""The contracts a strategy implements, one protocol per extension point.

Strategies are attrs classes: their fields are the options a recipe may set. These protocols are
structural, so a plugin needs no base class; ``squeezer.testing`` checks conformance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping

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


@runtime_checkable
class Task(Protocol):
    """What is trained and measured: the loss of a batch, the rows distillation compares, and the
    validation metric, computed from per-batch sums so batches of any size add up.

    ``metric`` names the metric (``"accuracy"``, ``"perplexity"``); ``higher_is_better`` says
    which way it improves. A task may also define ``split(batch) -> (inputs, targets) | None``
    (``None``: the core's default, :func:`squeezer.engine.task.split_batch`). Raise
    ``ValueError`` when outputs or targets do not fit the task, its message starting with
    ``targets`` when the data is at fault (the core then names the data factory).
    """

    metric: str
    higher_is_better: bool

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: a 0-d tensor, the mean over the task's positions."""
        ...

    def positions(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The outputs at the task's positions as rows ``(N, C)`` (what distillation compares)."""
        ...

    def stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Sums over the batch: ``loss_sum``, ``count`` and whatever :meth:`score` needs."""
        ...

    def score(self, stats: Mapping[str, float]) -> float:
        """The metric from statistics summed over a loader's batches."""
        ...
