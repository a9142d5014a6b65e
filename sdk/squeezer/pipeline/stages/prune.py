"""``prune``: iterative pruning; each round prunes to the scheduled sparsity, then trains (QAT with a quantizer).

This is PQK's Phase 1 when the recipe puts a ``train`` stage before it and gives it a quantizer.
"""

from __future__ import annotations

from typing import Any

import torch

from squeezer import compress
from squeezer.compress.weight import compressed_weights
from squeezer.engine import Pruner
from squeezer.engine.schedule import prune_epochs, rounds_before
from squeezer.pipeline.events import Note, Pruned
from squeezer.pipeline.stages.base import StageRunner
from squeezer.pipeline.stages.quantize import attach_activations_once, attach_targets
from squeezer.pipeline.training import batch_to, forward
from squeezer.recipe.configs import PruneStage
from squeezer.recipe.loader import checked_schedule


class PruneRunner(StageRunner):
    CONFIG = PruneStage
    cfg: PruneStage

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        where = f"stages[{self.index}]"
        reg, cfg = self.ctx.registry, self.cfg
        importance = reg.create("importance", cfg.importance.name, cfg.importance.options,
                                where=f"{where}.importance")
        scheduler = reg.create("scheduler", cfg.scheduler.name, cfg.scheduler.options, where=f"{where}.scheduler")
        self.schedule = checked_schedule(scheduler, f"{where}.scheduler ({cfg.scheduler.name})")
        plugin = reg.get("importance", cfg.importance.name).plugin
        self.pruner = Pruner(
            model=self.ctx.model, registry=reg, importance=importance, schedule=self.schedule,
            importance_name=cfg.importance.name, importance_plugin=plugin,
            scope=cfg.scope, min_density=cfg.min_density, keep_rows=cfg.keep_rows,
            quantizer=cfg.quantizer, quantizer_where=f"{where}.quantizer",
            warn=lambda message: self.ctx.sink(Note(f"{where}: {message}", level="warning")),
        )

    def epochs(self) -> int:
        return prune_epochs(len(self.schedule), self.cfg.epochs_per_round)

    def progress(self, epoch: int, step: int, steps: int) -> float:
        per = max(1, self.cfg.epochs_per_round)  # cosine restarts every round: recover, then prune again
        return ((epoch % per) * steps + step) / (per * steps)

    def prepare(self, resuming: bool) -> None:
        if resuming:
            return
        attach_targets(self.ctx)
        # The first round runs here, before the optimizer exists, so that the quantizers it
        # attaches (initialized from the pruned weights) have their step sizes trained; so do the
        # activation quantizers, calibrated on the pruned, quantized model.
        for r in rounds_before(0, len(self.schedule), self.cfg.epochs_per_round):
            self._prune_round(r, None)
        attach_activations_once(self.ctx, self.cfg.activations, f"stages[{self.index}].activations")

    def before_epoch(self, epoch: int, optimizer: torch.optim.Optimizer | None) -> None:
        if epoch > 0:  # epoch 0's rounds ran in prepare()
            for r in rounds_before(epoch, len(self.schedule), self.cfg.epochs_per_round):
                self._prune_round(r, optimizer)

    def _prune_round(self, r: int, optimizer: torch.optim.Optimizer | None) -> None:
        self.pruner.model, self.pruner.rounds_done = self.ctx.model, r  # rounds are laid on epochs (resume)
        grads = self._gradients() if self.pruner.needs_gradients else None
        layers, bits = self.pruner.round(optimizer, grads)
        self.ctx.record.bits.update(bits)
        self.ctx.sink(Pruned(
            self.index, r, self.schedule[r], compress.sparsity(self.ctx.model),
            tuple((layer.name, layer.target, layer.achieved) for layer in layers),
        ))

    def _gradients(self) -> dict[str, torch.Tensor]:
        """Accumulate dL/dW over calibration batches, for gradient-based importance criteria."""
        model = self.ctx.model
        params = {path: compress.original(model, path) for path, _ in compressed_weights(model)}
        for p in params.values():
            p.grad = None
        for i, batch in enumerate(self.ctx.train_loader):
            if i >= self.cfg.calibration_batches:
                break
            x, y = batch_to(batch, self.ctx.device, self.ctx.task)
            self.ctx.task.loss(forward(model, x), y).backward()
        grads = {path: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                 for path, p in params.items()}
        model.zero_grad(set_to_none=True)
        return grads
