"""The stage protocol: the runner owns the epoch loop, checkpoints and events; a stage supplies the steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from squeezer.engine import param_groups
from squeezer.errors import ArtifactError, first_line
from squeezer.pipeline.context import Context
from squeezer.pipeline.training import batch_to, evaluate, forward
from squeezer.recipe.configs import Stage, Strategy


class StageRunner:
    """Default behaviour: plain supervised training of the model as it is.

    A runner names the config class it runs (``CONFIG``); its ``TYPE`` is the recipe's stage type.
    """

    CONFIG: ClassVar[type[Stage]]

    def __init__(self, ctx: Context, cfg: Stage, index: int) -> None:
        self.ctx, self.cfg, self.index = ctx, cfg, index
        self.optim = ctx.optim_for(cfg.optim)

    # --- structure -------------------------------------------------------------------------
    def epochs(self) -> int:
        return self.cfg.epochs

    def prepare(self, resuming: bool) -> None:
        """Build what the stage needs; when resuming, structure comes from the checkpoint."""

    def param_groups(self) -> list[dict[str, Any]]:
        """The engine's groups (:func:`squeezer.engine.param_groups`) with this stage's settings."""
        return param_groups(self.ctx.model, self.optim.weight_decay, self.optim.quantizer_lr_scale)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules besides the model whose state is checkpointed (e.g. the PQK teacher's own norms)."""
        return {}

    def load_extra(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """On resume, load the checkpoint's state of :meth:`extra_modules` (keys ``NAME.KEY``)."""
        for name, module in self.extra_modules().items():
            try:
                module.load_state_dict(prefixed(tensors, f"{name}."))
            except RuntimeError as exc:
                raise ArtifactError(f"{self.ctx.out_dir / 'checkpoints'}: the checkpoint's {name!r} state does "
                                    f"not fit stages[{self.index}] ({first_line(exc)})") from None

    # --- the loop --------------------------------------------------------------------------
    def progress(self, epoch: int, step: int, steps: int) -> float:
        """Where the learning-rate schedule stands, in [0, 1]."""
        total = max(1, self.epochs() * steps)
        return (epoch * steps + step) / total

    def before_epoch(self, epoch: int, optimizer: torch.optim.Optimizer | None) -> None:
        """Called before each epoch (pruning rounds happen here)."""

    def network(self) -> nn.Module:
        """The module the stage trains (the runner wraps it in DDP when distributed)."""
        return self.ctx.model

    def step(self, net: nn.Module, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step's loss; ``net`` is :meth:`network`, possibly DDP-wrapped."""
        x, y = batch_to(batch, self.ctx.device, self.ctx.task)
        return self.ctx.task.loss(forward(net, x), y), {}

    def epoch_metrics(self) -> dict[str, float]:
        """Extra validation metrics reported at the end of each epoch."""
        return {}

    def finish(self) -> None:
        """Called once after the last epoch."""

    def accuracy(self) -> float:
        return evaluate(self.ctx.model, self.ctx.val_loader, self.ctx.device, self.ctx.task)[1]


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def distillation_loss(ctx: Context, strategy: Strategy, where: str) -> LossFn:
    """The recipe's distillation loss, guarded: a raise or a non-scalar result names its plugin."""
    from squeezer.errors import PluginError

    name = strategy.name
    loss = ctx.registry.create("distillation_loss", name, strategy.options, where=where)
    plugin = ctx.registry.get("distillation_loss", name).plugin

    def call(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        try:
            value = loss(student, teacher)
        except Exception as exc:
            raise PluginError(f"distillation loss {name!r} (plugin {plugin!r}) raised "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise PluginError(f"distillation loss {name!r} (plugin {plugin!r}) must return a scalar tensor")
        return value

    return call


def prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix``, with the prefix taken off."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
