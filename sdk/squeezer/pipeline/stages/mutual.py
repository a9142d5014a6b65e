"""``mutual``: PQK Phase 2. Masks are frozen; the student (pruned, quantized) and its self-teacher
(student + unimportant weights, same storage) first warm up on cross-entropy, then learn mutually:
each adds a distillation loss towards the other's detached output (Deep Mutual Learning).

Both losses are summed into one backward: the views route gradients to disjoint entries of each
compressed weight, so one optimizer step updates the student's important entries and the teacher's
unimportant ones without either touching the other's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from squeezer.compress.teacher import SelfTeacher
from squeezer.engine import mutual_groups, mutual_loss
from squeezer.engine.schedule import kd_weight
from squeezer.pipeline.stages.base import StageRunner, distillation_loss
from squeezer.pipeline.training import batch_to, evaluate, forward
from squeezer.recipe.configs import MutualStage


class StudentAndTeacher(nn.Module):
    """Both forwards in one module, so that one DDP wrapper covers the student's parameters and
    the teacher's private ones (and their disjoint gradients are reduced together)."""

    def __init__(self, student: nn.Module, teacher: SelfTeacher) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher

    def forward(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.teacher.train(self.student.training)
        return forward(self.student, x), forward(self.teacher, x)


class MutualRunner(StageRunner):
    CONFIG = MutualStage
    cfg: MutualStage

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss = distillation_loss(self.ctx, self.cfg.distillation, f"stages[{self.index}].distillation")
        self.teacher: SelfTeacher | None = None

    def epochs(self) -> int:
        return self.cfg.warmup_epochs + self.cfg.epochs

    def prepare(self, resuming: bool) -> None:
        self.teacher = SelfTeacher(self.ctx.model, self.cfg.teacher_owns, self.cfg.teacher_quantized)
        self.teacher.to(self.ctx.device)

    def extra_modules(self) -> dict[str, nn.Module]:
        assert self.teacher is not None
        return {"teacher": self.teacher}

    def param_groups(self) -> list[dict[str, Any]]:
        assert self.teacher is not None
        return mutual_groups(self.ctx.model, self.teacher, self.optim.quantizer_lr_scale)

    def network(self) -> nn.Module:
        assert self.teacher is not None
        return StudentAndTeacher(self.ctx.model, self.teacher)

    def step(self, net: nn.Module, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch_to(batch, self.ctx.device, self.ctx.task)
        s_logits, t_logits = net(x)
        loss, parts = mutual_loss(s_logits, t_logits, y, self.loss, kd_weight(self.cfg, epoch), task=self.ctx.task,
                                  student_distills=self.cfg.student_distills)
        # the student's CE and KD apart: their sum jumps when KD starts, which is no divergence
        shown = ("student_ce", "student_kd", "teacher_loss", "student_kd_on")
        return loss, {k: parts[k] for k in shown if k in parts}

    def epoch_metrics(self) -> dict[str, float]:
        assert self.teacher is not None
        accuracy = evaluate(self.teacher, self.ctx.val_loader, self.ctx.device, self.ctx.task)[1]
        self.ctx.record.teacher_accuracy[str(self.index)] = accuracy  # the run summary's regime line
        return {"teacher_accuracy": accuracy}
