"""First-order Taylor importance (Molchanov et al., CVPR 2019)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # torch is imported lazily so that `squeezer plugins list` stays instant
    import torch


@attrs.frozen(kw_only=True)
class TaylorImportance:
    """First-order Taylor |w * dL/dw|: the loss change a first-order expansion predicts for removing w.

    The core accumulates ``dL/dw`` over the prune stage's ``calibration_batches`` and passes the
    sum as ``grad``. Molchanov et al. square the product, ``(w * g) ** 2``; for per-weight pruning
    that ranks weights identically.
    """

    needs_gradients = True

    def __call__(self, weight: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        import torch

        if grad is None:
            raise ValueError("taylor importance needs the gradient of the loss (needs_gradients = True)")
        score = (weight.detach().float() * grad.detach().float()).abs()
        # a product of two large finite values may overflow: keep it the largest finite score
        return score.clamp_(max=torch.finfo(torch.float32).max)
