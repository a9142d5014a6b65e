"""Compression inside the Hugging Face ``Trainer``: a ``transformers.TrainerCallback``.

::

    from squeezer import Targets
    from squeezer.integrations.transformers import SqueezerTrainerCallback
    from squeezer.session import Compression

    comp = Compression(model, targets=Targets(types=("Linear",), exclude=("classifier",)),
                       schedule=("geometric", {"target": 0.8, "rounds": 3}), quantizer=("lsq", {"bits": 4}),
                       prune_every=50)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[SqueezerTrainerCallback(comp, export="model.safetensors")])
    trainer.train()

On a :class:`squeezer.session.Compression` (the one you pass, or one built on the trainer's model
from a recipe's ``prune`` stage):

- masks are attached when the ``Trainer`` is created (``on_init_end``; at the latest on
  ``on_train_begin``), so the optimizer the trainer creates lazily already holds the weights;
- ``on_train_begin`` and ``on_step_end`` (after each optimizer step) run the pruning rounds now
  due: from a recipe, laid on the epochs as ``squeezer run`` lays them (``train`` epochs, then each
  round followed by its ``epochs_per_round`` QAT epochs, then ``mutual``); otherwise a round every
  ``prune_every`` steps. The quantizers' parameters join the trainer's optimizer
  (``kwargs["optimizer"]``, unwrapped from accelerate's wrapper; held back until one exists) and its LR scheduler;
- ``on_train_end``: the artifact, written by the main process only (``export=``).

- Phase 2 (with ``mutual``: ``True``, a ``MutualStage``, or the recipe's ``mutual`` stage): from
  the recipe's ``mutual`` epoch, or else the first epoch after the last pruning round
  (``on_epoch_begin``), ``callback.teacher`` is the PQK
  self-teacher (its own norm copies added to the trainer's optimizer and LR scheduler, no weight
  decay on the shared storage). The loss needs a second forward, which only ``compute_loss`` can
  run: use :class:`SqueezerTrainer` (or :class:`MutualLossMixin` on your own ``Trainer``
  subclass), whose ``compute_loss`` then returns ``callback.mutual_loss(student_logits,
  teacher_logits, labels)`` (distillation weight 0 for the stage's ``warmup_epochs``), and the
  normal loss before.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import transformers
from torch import nn

from squeezer.errors import ConfigError
from squeezer.integrations._driver import (
    Driver,
    MutualPhase,
    Plan,
    Source,
)
from squeezer.recipe.configs import MutualStage
from squeezer.registry import Registry
from squeezer.session import Compression

__all__ = ["MutualLossMixin", "SqueezerTrainer", "SqueezerTrainerCallback"]


class SqueezerTrainerCallback(MutualPhase, transformers.TrainerCallback):
    """Prune and quantize inside ``transformers.Trainer.train``.

    ``source``: a :class:`~squeezer.session.Compression` on the trainer's model (or a submodule),
    or a recipe (a ``Recipe`` or a path: ``train`` stages, one ``prune``, at most one ``mutual``
    last) whose ``targets`` apply to ``module`` (a dotted submodule path; default the whole model).
    ``prune_every`` (recipe only): optimizer steps between rounds instead of the recipe's epochs.
    ``mutual``: ``True``, a ``MutualStage`` (its ``warmup_epochs``,
    ``kd_weight``, ``teacher_*``; the distillation loss is the Compression's), or ``None`` for the
    recipe's ``mutual`` stage if it has one; Phase 2 needs :class:`SqueezerTrainer` (or
    :class:`MutualLossMixin`). ``export``: the artifact path written when training ends.
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
        registry: Registry | None = None,
    ) -> None:
        if isinstance(source, Compression) and module is not None:
            raise ConfigError("module: the Compression you pass already names its model")
        self._plan = Plan(source, prune_every=prune_every, mutual=mutual, registry=registry)
        self.module = module
        self.export_path = export
        self.export_info = dict(export_info or {})
        self._epoch = 0
        self._init_phase()

    @property
    def compression(self) -> Compression:
        """The :class:`Compression` driven by the callback."""
        if self._driver is None:
            raise ConfigError("the callback builds its Compression when the Trainer is created")
        return self._driver.compression

    def _current_epoch(self) -> int | None:
        return self._epoch

    def _ensure(self, model: nn.Module | None) -> Driver | None:
        if self._driver is None and model is not None:
            # HF clips gradients before on_pre_optimizer_step: average while backward runs instead
            self._build_driver(model, "SqueezerTrainerCallback").average_in_backward = True
        return self._driver

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._ensure(kwargs.get("model"))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._ensure(kwargs.get("model"))
        loader = kwargs.get("train_dataloader")
        steps: float | None = None
        try:
            steps = math.ceil(len(loader) / max(1, args.gradient_accumulation_steps))  # type: ignore[arg-type]
        except TypeError:
            if state.max_steps and state.num_train_epochs:
                steps = math.ceil(state.max_steps / state.num_train_epochs)
        self._plan.set_steps_per_epoch(steps)
        self._epoch = -1  # on_epoch_begin counts epochs from 0
        if self._plan.timeline is not None:
            self._plan.timeline.check_fits(state.num_train_epochs or args.num_train_epochs, "SqueezerTrainerCallback")
        if self._driver is not None:
            self._driver.begin(kwargs.get("optimizer"), [kwargs.get("lr_scheduler")], 0)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._epoch += 1
        self._start_mutual_if_due(self._epoch, kwargs.get("optimizer"), [kwargs.get("lr_scheduler")])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.teacher is not None:
            # the Trainer zeroes the model's gradients only; the teacher's own copies are not in it
            for p in self.teacher.parameters():
                p.grad = None
        driver = self._ensure(kwargs.get("model"))
        if driver is not None:
            driver.step(kwargs.get("optimizer"), [kwargs.get("lr_scheduler")], max(self._epoch, 0))

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.teacher is not None and self._teacher_calls == 0:
            warnings.warn("SqueezerTrainerCallback: Phase 2 is on but compute_loss never called callback.teacher, "
                          "so the teacher's weights are not trained; use SqueezerTrainer", stacklevel=1)
        self._teacher_calls = 0

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._driver is None or self.export_path is None:
            return
        comp = self._driver.compression
        if not comp.done:
            warnings.warn(f"SqueezerTrainerCallback: training ended after {comp.rounds_done} of "
                          f"{len(comp.schedule)} pruning rounds; the artifact is less sparse than scheduled",
                          stacklevel=1)
        if state.is_world_process_zero:
            was_training = comp.model.training
            comp.model.eval()
            comp.export(self.export_path, info=self.export_info or None)
            comp.model.train(was_training)


def _logits(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    return outputs[0]


class MutualLossMixin:
    """``compute_loss`` for PQK's Phase 2, mixed into a ``transformers.Trainer`` subclass.

    Before Phase 2 (and without a :class:`SqueezerTrainerCallback` with ``mutual``) the loss is the
    ``Trainer``'s own. Once ``callback.teacher`` exists, each batch runs the student and the
    self-teacher on the inputs without ``labels`` and returns ``callback.mutual_loss(student_logits,
    teacher_logits, labels)``: one backward trains the student's kept weights and the teacher's
    pruned-away ones. The logits are the outputs' ``logits`` (or first element); the loss is
    PQK's cross-entropy on ``labels``, so this suits classification heads.
    """

    def _squeezer_callback(self) -> SqueezerTrainerCallback | None:
        handler = getattr(self, "callback_handler", None)
        found = [c for c in getattr(handler, "callbacks", ()) if isinstance(c, SqueezerTrainerCallback)]
        if len(found) > 1:
            raise ConfigError(f"expected at most one SqueezerTrainerCallback on the trainer, found {len(found)}")
        return found[0] if found else None

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        callback = self._squeezer_callback()
        teacher = callback.teacher if callback is not None else None
        if callback is None or teacher is None or not model.training:
            return super().compute_loss(  # type: ignore[misc]
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if "labels" not in inputs:
            raise ConfigError("Phase 2's mutual loss needs the batch's 'labels'")
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        teacher.train(model.training)
        teacher_outputs = teacher(**inputs)
        loss = callback.mutual_loss(_logits(outputs), _logits(teacher_outputs), labels)
        # a batch mean: the Trainer divides by the accumulation steps only if it thinks the loss
        # was not normalized by num_items_in_batch already, so do it here in that case
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None) or (
                getattr(self, "compute_loss_func", None) is not None)
        if scaled:
            loss = loss / max(1, int(getattr(self, "current_gradient_accumulation_steps", 1)))
        return (loss, outputs) if return_outputs else loss


class SqueezerTrainer(MutualLossMixin, transformers.Trainer):
    """``transformers.Trainer`` whose ``compute_loss`` runs PQK's Phase 2 when its
    :class:`SqueezerTrainerCallback` (with ``mutual``) has started it; otherwise the plain
    ``Trainer``."""
