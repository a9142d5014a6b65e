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


@attrs.frozen(kw_only=True)
class LampScore:
    """LAMP (Lee et al., ICLR 2021): ``w_u^2 / sum_{|w_v| >= |w_u|} w_v^2`` within each layer.

    The magnitude rescaled by the layer's remaining mass, so scores compare across layers: global
    pruning by LAMP does not wipe out layers whose weights are small only because a following
    normalization layer rescales them (layer collapse at extreme sparsity).
    """

    needs_gradients = False

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        squared = weight.detach().reshape(-1).double().square()
        ordered, order = torch.sort(squared, stable=True)
        # mass of every weight at least as large: suffix sums of the ascending order
        suffix = ordered.flip(0).cumsum(0).flip(0)
        score = torch.empty_like(squared)
        score[order] = ordered / suffix.clamp_min(torch.finfo(torch.float64).tiny)
        return score.view(weight.shape).float()
