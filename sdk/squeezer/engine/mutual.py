"""PQK Phase 2: the self-teacher's optimizer groups and the mutual loss, for every driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from squeezer.compress.teacher import SelfTeacher
from squeezer.engine.params import split_parameters
from squeezer.engine.task import RunTask
from squeezer.errors import ConfigError
from squeezer.recipe.configs import STUDENT_DISTILLS

#: ``(logits, target logits) -> scalar``, a registered distillation loss
KD = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mutual_groups(model: nn.Module, teacher: SelfTeacher, quantizer_lr_scale: float = 1.0) -> list[dict]:
    """Optimizer groups for Phase 2: no weight decay on the shared storage (decay would move the
    entries a step does not own), the quantizers' learning-rate scale, the teacher's private copies."""
    originals, quantizer, others = split_parameters(model)
    return [
        {"params": originals, "weight_decay": 0.0},
        {"params": quantizer, "weight_decay": 0.0, "lr_scale": quantizer_lr_scale},
        {"params": others},
        {"params": [p for p in teacher.parameters() if p.requires_grad]},
    ]


def mutual_loss(student: torch.Tensor, teacher: torch.Tensor, targets: Any, kd: KD,
                kd_weight: float = 1.0, *, task: RunTask,
                student_distills: str = "always") -> tuple[torch.Tensor, dict[str, float]]:
    """Deep mutual learning on one batch: each network's task loss (cross-entropy for
    classification) plus ``kd_weight`` times the distillation loss towards the other's *detached*
    outputs at the task's positions (``kd_weight = 0``: the warm-up).

    ``student_distills = "when_teacher_leads"`` keeps the student's distillation term only on a
    batch where the teacher's task loss is lower than the student's: a self-teacher that falls
    behind its student pulls it down (measured on the suite, benchmarks/results/SUITE.md), while
    the teacher keeps learning from the student. ``parts["student_kd_on"]`` is 1 where it applied.

    Returns the summed loss (one backward trains both; the shared storage routes each gradient to
    the entries its network owns) and its parts, so a jump when KD starts is not read as divergence.
    """
    if student_distills not in STUDENT_DISTILLS:
        raise ConfigError(f"student_distills: must be one of {', '.join(STUDENT_DISTILLS)}, got {student_distills!r}")
    ce_s, ce_t = task.loss(student, targets), task.loss(teacher, targets)
    loss_s, loss_t = ce_s, ce_t
    parts = {"student_ce": float(ce_s.detach()), "teacher_ce": float(ce_t.detach())}
    if kd_weight > 0:
        s, t = task.positions(student, targets), task.positions(teacher, targets)
        kd_s, kd_t = kd(s, t.detach()), kd(t, s.detach())
        # a 0/1 factor, not a skipped term: every rank's graph keeps the same shape under DDP
        on = 1.0 if student_distills == "always" or parts["teacher_ce"] < parts["student_ce"] else 0.0
        loss_s, loss_t = loss_s + on * kd_weight * kd_s, loss_t + kd_weight * kd_t
        parts.update(student_kd=float(kd_s.detach()), teacher_kd=float(kd_t.detach()), student_kd_on=on)
    parts.update(student_loss=float(loss_s.detach()), teacher_loss=float(loss_t.detach()))
    return loss_s + loss_t, parts
