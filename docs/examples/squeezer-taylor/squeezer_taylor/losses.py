"""A cosine distillation loss on softened class probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # torch is imported lazily so that `squeezer plugins list` stays instant
    import torch


@attrs.frozen(kw_only=True)
class CosineKD:
    """Cosine distance 1 - cos(p_s, p_t) between softmax(logits / T) of student and teacher, batch-mean.

    Bounded in [0, 1] (probabilities are nonnegative), 0 when the distributions agree, and
    insensitive to the logits' shift (softmax) and to how confident both are together.
    """

    temperature: float = attrs.field(
        default=1.0, validator=[attrs.validators.gt(0.0), attrs.validators.le(100.0)],
        metadata={"help": "softmax temperature T (> 0)"},
    )

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        p_s = F.softmax(student_logits.float() / self.temperature, dim=-1)
        p_t = F.softmax(teacher_logits.float() / self.temperature, dim=-1)
        return (1.0 - F.cosine_similarity(p_s, p_t, dim=-1)).mean()
