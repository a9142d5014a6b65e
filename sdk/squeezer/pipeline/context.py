"""What every stage works on: the model, the data, the registry, where to report and write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

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

    def optim_for(self, stage_optim: Optim | None) -> Optim:
        return stage_optim or self.recipe.training
