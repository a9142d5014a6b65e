"""What every stage works on: the model, the data, the registry, where to report and write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from squeezer.engine.task import RunTask
from squeezer.pipeline.distributed import DistInfo
from squeezer.pipeline.events import Sink
from squeezer.pipeline.record import RunRecord
from squeezer.recipe.configs import Optim, Recipe
from squeezer.registry import Registry


@attrs.define
class Context:
    """Mutable run state handed to stages (configs themselves stay frozen)."""

    recipe: Recipe
    registry: Registry
    model: nn.Module
    train_loader: Any
    val_loader: Any
    device: torch.device
    sink: Sink
    out_dir: Path
    record: RunRecord = attrs.field(factory=RunRecord)
    dist: DistInfo = attrs.field(factory=DistInfo)
    recipe_hash: str = ""
    _task: RunTask | None = attrs.field(default=None, alias="task")

    @property
    def task(self) -> RunTask:
        """The recipe's task (what every stage trains and measures), built on first use."""
        if self._task is None:
            self._task = RunTask.create(self.registry, self.recipe.task.name, self.recipe.task.options)
        return self._task

    def optim_for(self, stage_optim: Optim | None) -> Optim:
        return stage_optim or self.recipe.training
