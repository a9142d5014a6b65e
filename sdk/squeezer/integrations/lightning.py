"""Compression inside your own ``LightningModule`` and ``Trainer``: a Lightning ``Callback``.

::

    from squeezer.integrations.lightning import SqueezerCallback

    callback = SqueezerCallback("recipe.toml", export="model.safetensors")   # or a Compression
    trainer = L.Trainer(max_epochs=8, callbacks=[callback])
    trainer.fit(module, train_loader)

What the callback does, on a :class:`squeezer.session.Compression` (built on the module, or on its
submodule ``module=``, from the recipe's ``prune`` stage; or the one you pass):

- ``setup``: masks and (pending) quantizers on the targeted weights, before ``configure_optimizers``
  and DDP wrapping, so the optimizer and DDP hold every parameter compression trains;
- ``on_train_start`` and after every optimizer step (``on_train_batch_end``; gradient accumulation
  counts once): the pruning rounds now due. The first switches the quantizers on and moves the
  stored weights and quantizer steps to a param group of ``trainer.optimizers[i]`` without weight
  decay (its LR schedulers extended to it). From a recipe, the stages are laid on the
  epochs as ``squeezer run`` lays them (``train`` epochs, then each round followed by its
  ``epochs_per_round`` QAT epochs, then ``mutual``); otherwise a round every ``prune_every`` steps;
- Phase 2 (with ``mutual``): from the recipe's ``mutual`` epoch (or the first epoch after the last
  pruning round), ``callback.teacher``
  is the PQK self-teacher (its parameters in the optimizer, no weight decay on the shared
  storage). Your ``training_step`` calls it and returns :meth:`SqueezerCallback.mutual_loss`; one
  backward then trains the student's kept weights and the teacher's pruned-away ones;
- ``on_fit_end``: the artifact written by global rank 0 (``export=``).

Resuming (``trainer.fit(module, loader, ckpt_path=...)`` with a fresh module, callback and trainer):
the callback's state is part of Lightning's checkpoint (``state_dict``). While Lightning loads the
model's state (masks, weights, the quantizers' values; before ``configure_optimizers``); after
``configure_optimizers`` (``on_fit_start``, before Lightning loads the optimizer's state) the
callback switches on the quantizers that were on, restores its counters and Phase 2, and moves or
adds the param groups it had, in the same order. See :mod:`squeezer.integrations._core`.

Under DDP, the gradients of the teacher's private copies, created at Phase 2 and unknown to the DDP
wrapper, are averaged across ranks as backward accumulates them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from squeezer.errors import ConfigError
from squeezer.integrations._core import Core, CoreCallback, Source
from squeezer.recipe.configs import MutualStage
from squeezer.registry import Registry

__all__ = ["SqueezerCallback"]


class SqueezerCallback(CoreCallback, pl.Callback):
    """Prune, quantize and (optionally) run PQK's mutual phase inside ``Trainer.fit``.

    ``source``: a :class:`~squeezer.session.Compression` whose model is the LightningModule or a
    submodule of it, or a recipe (a ``Recipe`` or a path: ``train`` stages, one ``prune``, at most one
    ``mutual`` last), whose ``targets`` apply to ``module`` (a dotted submodule path; default the
    whole LightningModule). ``prune_every`` (recipe only): optimizer steps between rounds instead
    of the recipe's epochs. ``mutual``: ``True``, a
    ``MutualStage`` (its ``warmup_epochs``, ``kd_weight``, ``teacher_*``; the distillation loss is
    the Compression's), or ``None`` for the recipe's ``mutual`` stage if it has one.
    ``export``: the artifact path written at the end of ``fit``.

    ``trainer.fit(module, ckpt_path=...)`` resumes from any checkpoint of such a run (the callback's
    state is part of it) with a fresh module, callback and trainer built as before.
    """

    def __init__(
        self,
        source: Source,
        *,
        module: str | None = None,
        prune_every: int | None = None,
        mutual: bool | MutualStage | None = None,
        export: str | os.PathLike[str] | None = None,
        export_info: Mapping[str, Any] | None = None,
        optimizer_index: int = 0,
        registry: Registry | None = None,
    ) -> None:
        super().__init__()
        self.optimizer_index = optimizer_index
        self._last_step = 0
        self._trainer: pl.Trainer | None = None
        self._core = Core("SqueezerCallback", source, module=module, prune_every=prune_every, mutual=mutual,
                          export=export, export_info=export_info, registry=registry)

    # --- access ---------------------------------------------------------------------------
    @staticmethod
    def of(trainer: pl.Trainer) -> SqueezerCallback:
        """The trainer's SqueezerCallback (e.g. ``SqueezerCallback.of(self.trainer)`` in a module)."""
        found = [c for c in trainer.callbacks if isinstance(c, SqueezerCallback)]  # type: ignore[attr-defined]
        if len(found) != 1:
            raise ConfigError(f"expected one SqueezerCallback on the trainer, found {len(found)}")
        return found[0]

    def _epoch_now(self) -> int | None:
        return self._trainer.current_epoch if self._trainer is not None else None

    # --- resuming: the callback's state in Lightning's checkpoint ------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._trainer = trainer
        self._core.attach(pl_module)
        self._core.watch_loads()  # Lightning loads a checkpoint's model state before configure_optimizers

    def state_dict(self) -> dict[str, Any]:
        """The callback's part of a checkpoint (see :mod:`squeezer.integrations._core`)."""
        return self._core.state(self._optimizer(self._trainer)) if self._trainer is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called after the model's state is loaded and before ``configure_optimizers``: check the
        settings now; the structure is restored once the optimizer exists (``on_fit_start``)."""
        core = self._core
        if core.compression is None or not state_dict or not core.resuming:
            return
        core.check_saved(state_dict)
        core.saved = state_dict
        trainer = self._trainer
        if trainer is not None and trainer.strategy.restore_checkpoint_after_setup:  # the optimizer exists
            core.restore(state_dict, self._optimizer(trainer), self._schedulers(trainer))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # configure_optimizers has run; Lightning loads the optimizer's state next
        if self._core.saved is not None and not self._core.restored:
            self._core.restore(self._core.saved, self._optimizer(trainer), self._schedulers(trainer))
        self._require_restored()

    def _require_restored(self) -> None:
        if self._core.loaded_unrestored:
            raise self._core.fail("the checkpoint has no SqueezerCallback state (was it written with the "
                                  "callback and without save_weights_only?)")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._core.unwatch()

    # --- training ---------------------------------------------------------------------------
    def _optimizer(self, trainer: pl.Trainer) -> torch.optim.Optimizer | None:
        optimizers = trainer.optimizers
        return optimizers[self.optimizer_index] if len(optimizers) > self.optimizer_index else None

    def _schedulers(self, trainer: pl.Trainer) -> list[Any]:
        return [config.scheduler for config in trainer.lr_scheduler_configs]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._require_restored()
        self._core.unwatch()
        batches = trainer.num_training_batches
        steps = math.ceil(batches / max(1, trainer.accumulate_grad_batches)) if math.isfinite(batches) else None
        max_epochs = trainer.max_epochs
        self._core.set_steps_per_epoch(steps, max_epochs if max_epochs and max_epochs > 0 else None)
        self._core.check_timing()
        self._last_step = trainer.global_step
        self._core.begin(self._optimizer(trainer), self._schedulers(trainer), trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._core.start_mutual_if_due(trainer.current_epoch, self._optimizer(trainer), self._schedulers(trainer))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.teacher is not None:
            self.teacher.train(pl_module.training)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # no optimizer step this batch under gradient accumulation; count each one otherwise
        for _ in range(trainer.global_step - self._last_step):
            self._core.step(self._optimizer(trainer), self._schedulers(trainer), trainer.current_epoch)
        self._last_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._core.check_teacher_called("training_step")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._core.export_at_end(trainer.is_global_zero)
        if self._core.compression is not None and self._core.export_path is not None:
            trainer.strategy.barrier("squeezer-export")
