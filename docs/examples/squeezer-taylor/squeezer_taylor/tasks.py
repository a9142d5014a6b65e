"""A multi-label task: several independent yes/no labels per example."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import torch


@attrs.frozen(kw_only=True)
class MultiLabel:
    """Independent yes/no labels: binary cross-entropy, the fraction of labels right.

    Logits and 0/1 targets of shape ``[batch, labels]``; a logit above 0 means yes. Statistics
    are sums, so the core adds them over batches.
    """

    metric: str = attrs.field(default="label_accuracy", init=False)
    higher_is_better: bool = attrs.field(default=True, init=False)

    def _check(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.dim() != 2 or outputs.shape != targets.shape:
            raise ValueError(f"outputs of shape {tuple(outputs.shape)} do not fit targets of shape "
                             f"{tuple(targets.shape)}: multilabel expects both (batch, labels)")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        self._check(outputs, targets)
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype))

    def positions(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._check(outputs, targets)
        return outputs  # one row per example

    def stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        import torch.nn.functional as F

        self._check(outputs, targets)
        y = targets.float()
        bce = F.binary_cross_entropy_with_logits(outputs.float(), y, reduction="sum")
        return {"loss_sum": float(bce), "count": float(y.numel()), "right": float(((outputs > 0) == (y > 0.5)).sum())}

    def score(self, stats: Mapping[str, float]) -> float:
        return stats["right"] / stats["count"] if stats["count"] else float("nan")
