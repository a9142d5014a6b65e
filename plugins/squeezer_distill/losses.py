"""Distillation losses. In mutual training (PQK Phase 2, Deep Mutual Learning) the core calls a
loss in both directions, each time with the other network's logits detached."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # torch is imported lazily so that listing plugins stays instant
    import torch


@attrs.frozen(kw_only=True)
class HintonKD:
    """Hinton KD: ``T**2 * KL(softmax(t / T) || softmax(s / T))``, batch-mean."""

    temperature: float = attrs.field(
        default=4.0, validator=[attrs.validators.gt(0.0), attrs.validators.le(100.0)],
        metadata={"help": "softmax temperature T (> 0)"},
    )

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * (t * t)


@attrs.frozen(kw_only=True)
class LogitMSE:
    """Mean squared error between logits (Ba & Caruana, 2014)."""

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(student_logits, teacher_logits)
