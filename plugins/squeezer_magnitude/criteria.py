"""Magnitude criteria: a weight matters as much as it is large.

For unstructured (per-weight) pruning ``|w|`` and ``w**2`` rank weights identically; both exist so
that recipes can name the norm they mean, and they differ once scores are aggregated over groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # torch is imported lazily so that listing plugins stays instant
    import torch


@attrs.frozen(kw_only=True)
class L1Magnitude:
    """L1 magnitude |w|: prune the smallest weights (Han et al., 2015)."""

    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.detach().abs().float()


@attrs.frozen(kw_only=True)
class L2Magnitude:
    """L2 magnitude w**2: prune the smallest weights by squared value."""

    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        return weight.detach().float().square()
