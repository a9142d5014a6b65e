"""``distill``: plain knowledge distillation. A frozen copy of the current model teaches a fresh
student (the recipe's ``student`` factory, or a new instance of ``[model]``: born-again networks)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from squeezer import compress
from squeezer.engine.activations import restore_from_state
from squeezer.errors import ArtifactError
from squeezer.factories import build_module
from squeezer.pipeline.rebuild import factory_at
from squeezer.pipeline.stages.base import StageRunner, distillation_loss, prefixed
from squeezer.pipeline.training import batch_to, forward
from squeezer.recipe.configs import DistillStage


class DistillRunner(StageRunner):
    CONFIG = DistillStage
    cfg: DistillStage

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss = distillation_loss(self.ctx, self.cfg.distillation, f"stages[{self.index}].distillation")
        self.teacher: nn.Module | None = None

    def prepare(self, resuming: bool) -> None:
        # The teacher is the model as the previous stage left it. On resume the current model is
        # already the student, so the teacher is rebuilt from the model's factory and the structure
        # in the run record; the runner then loads its state through load_extra().
        if resuming:
            spec = self.ctx.record.kd_teacher_spec
            if spec is None:
                raise ArtifactError(f"{self.ctx.out_dir / 'checkpoints'}: the checkpoint stops inside "
                                    f"stages[{self.index}] (distill) but records no teacher structure")
            teacher = build_module(*factory_at(self.ctx.recipe, self.index))
            compress.restore(teacher, spec, self.ctx.registry)
        else:
            teacher = copy.deepcopy(self.ctx.model)
            self.ctx.record.kd_teacher_spec = compress.spec(teacher)
        self.teacher = teacher.to(self.ctx.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        if resuming:
            return
        factory = self.cfg.student or self.ctx.recipe.model
        where = f"stages[{self.index}].student" if self.cfg.student else "model"
        self.ctx.model = build_module(factory, where).to(self.ctx.device)

    def extra_modules(self) -> dict[str, nn.Module]:
        assert self.teacher is not None
        return {"kd_teacher": self.teacher}

    def load_extra(self, tensors: Mapping[str, torch.Tensor]) -> None:
        # the teacher rebuilt in prepare() lacks the input quantizers an earlier stage attached;
        # their bits and grids are in its checkpointed state
        assert self.teacher is not None
        restore_from_state(self.teacher, prefixed(tensors, "kd_teacher."))
        super().load_extra(tensors)

    def step(self, net: nn.Module, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.teacher is not None
        task = self.ctx.task
        x, y = batch_to(batch, self.ctx.device, task)
        with torch.no_grad():
            t_logits = forward(self.teacher, x)
        s_logits = forward(net, x)
        kd = self.loss(task.positions(s_logits, y), task.positions(t_logits, y))
        loss = task.loss(s_logits, y) + self.cfg.kd_weight * kd
        return loss, {}
