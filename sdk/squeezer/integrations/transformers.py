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
  ``prune_every`` steps. The quantizers exist (pending) from the masks on, so the trainer's optimizer
  holds them; the first round switches them on and moves them and the stored weights to a param group
  of the trainer's optimizer (``kwargs["optimizer"]``, unwrapped from accelerate's wrapper) without
  weight decay, covered by its LR scheduler;
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

Resuming (``trainer.train(resume_from_checkpoint=...)`` with a fresh model, callback and trainer):
the callback's state is saved in the optimizer's ``state_dict`` (``optimizer.pt``, key
``"squeezer"``). The Trainer loads the model's weights (the quantizers' values included);
just before the optimizer loads its state (a ``load_state_dict`` pre-hook on the optimizer) the
callback switches on the quantizers that were on, restores its counters and Phase 2, and adds its param groups
again, extending the LR scheduler. The Trainer creates its optimizer out of a callback's reach, so
the hook is put on it by :class:`SqueezerTrainer` / :class:`MutualLossMixin` (``create_optimizer``,
``create_scheduler``), or on the optimizer and scheduler given as ``Trainer(optimizers=...)``.
"""

from __future__ import annotations

import math
import os
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

import torch
import transformers
from torch import nn

from squeezer.errors import ConfigError
from squeezer.integrations._core import Core, CoreCallback, Source, unwrap_optimizer
from squeezer.pipeline.training import logits_of
from squeezer.recipe.configs import MutualStage
from squeezer.registry import Registry

__all__ = ["MutualLossMixin", "SqueezerTrainer", "SqueezerTrainerCallback"]

#: the key of the callback's state in the optimizer's state_dict (``optimizer.pt``)
STATE_KEY = "squeezer"


class SqueezerTrainerCallback(CoreCallback, transformers.TrainerCallback):
    """Prune and quantize inside ``transformers.Trainer.train``.

    ``source``: a :class:`~squeezer.session.Compression` on the trainer's model (or a submodule),
    or a recipe (a ``Recipe`` or a path: ``train`` stages, one ``prune``, at most one ``mutual``
    last) whose ``targets`` apply to ``module`` (a dotted submodule path; default the whole model).
    ``prune_every`` (recipe only): optimizer steps between rounds instead of the recipe's epochs.
    ``mutual``: ``True``, a ``MutualStage`` (its ``warmup_epochs``,
    ``kd_weight``, ``teacher_*``; the distillation loss is the Compression's), or ``None`` for the
    recipe's ``mutual`` stage if it has one; Phase 2 needs :class:`SqueezerTrainer` (or
    :class:`MutualLossMixin`). ``export``: the artifact path written when training ends.

    ``trainer.train(resume_from_checkpoint=...)`` resumes from any checkpoint of such a run, with a
    fresh model, callback and :class:`SqueezerTrainer` (or a ``Trainer`` with
    :class:`MutualLossMixin`, or one given ``optimizers=(optimizer, lr_scheduler)``). The callback's
    state travels in the optimizer's ``state_dict`` under ``"squeezer"``.
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
        self._epoch = 0
        self._core = Core("SqueezerTrainerCallback", source, module=module, prune_every=prune_every,
                          mutual=mutual, export=export, export_info=export_info, registry=registry)
        # resuming: the optimizers whose state_dict carries the callback's state, the LR scheduler
        # to extend before it loads, and whether the trainer lets the callback restore in time
        self._watched: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        self._lr_schedulers: list[Any] = []
        self._can_restore = False
        self._origin = uuid.uuid4().hex  # marks the states this callback wrote (see _restore_from_optimizer_state)

    def _epoch_now(self) -> int | None:
        return self._epoch

    def _ensure(self, model: nn.Module | None) -> None:
        if self._core.compression is None and model is not None:
            self._core.attach(model)
            declare_ties(model)
            self._core.watch_loads(self._check_can_restore)  # train(resume_from_checkpoint=) loads the model first

    # --- resuming: the callback's state in the optimizer's state_dict ----------------------------
    def _watch_optimizer(self, optimizer: Any) -> None:
        """Save the callback's state with ``optimizer``'s, and restore it (the structure, the param
        groups) just before ``optimizer`` loads a checkpoint's state."""
        opt = unwrap_optimizer(optimizer)
        if opt is None or opt in self._watched:
            return
        opt.register_state_dict_post_hook(self._save_into_optimizer_state)
        opt.register_load_state_dict_pre_hook(self._restore_from_optimizer_state)
        self._watched.add(opt)

    def _save_into_optimizer_state(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        if self._core.compression is not None:
            state_dict[STATE_KEY] = {**self._core.state(optimizer), "origin": self._origin}

    def _restore_from_optimizer_state(self, optimizer: torch.optim.Optimizer,
                                      state_dict: dict[str, Any]) -> dict[str, Any]:
        core = self._core
        saved = state_dict.pop(STATE_KEY, None)  # a shallow copy: the caller's dict keeps it
        if saved is None and core.loaded_unrestored:
            raise core.fail("the checkpoint's optimizer state holds no callback state (was it written by a run "
                            "with this callback, by this version of squeezer?)")
        # accelerate's optimizer wrapper loads the optimizer's own state_dict again: not a checkpoint
        if saved and saved.get("origin") != self._origin and core.resuming and not core.restored:
            core.restore(saved, optimizer, self._lr_schedulers)
        return state_dict

    def _check_can_restore(self) -> None:
        if not self._can_restore:
            raise self._core.fail("the callback restores its param groups before the optimizer loads its state, "
                                  "which needs SqueezerTrainer (or MutualLossMixin on your Trainer subclass), or "
                                  "Trainer(optimizers=(optimizer, lr_scheduler))")

    def _trainer_restores(self, resuming: bool) -> None:
        """Called by :class:`MutualLossMixin` when ``train`` starts."""
        self._can_restore = True
        if resuming and not self._core.resuming and self._core.compression is not None:
            self._core.watch_loads(self._check_can_restore)

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._ensure(kwargs.get("model"))
        optimizer, scheduler = kwargs.get("optimizer"), kwargs.get("lr_scheduler")
        if optimizer is not None:  # Trainer(optimizers=(optimizer, lr_scheduler))
            self._watch_optimizer(optimizer)
            if scheduler is not None:
                self._lr_schedulers = [scheduler]
                self._can_restore = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        core = self._core
        self._ensure(kwargs.get("model"))
        if state.global_step > 0 and not core.restored:
            raise core.fail(f"training resumes at step {state.global_step} but the callback's state was not "
                            "restored (the checkpoint's optimizer state has none, or it was loaded without "
                            "SqueezerTrainer / MutualLossMixin)")
        core.unwatch()
        self._watch_optimizer(kwargs.get("optimizer"))
        loader = kwargs.get("train_dataloader")
        steps: float | None = None
        try:
            steps = math.ceil(len(loader) / max(1, args.gradient_accumulation_steps))  # type: ignore[arg-type]
        except TypeError:
            if state.max_steps and state.num_train_epochs:
                steps = math.ceil(state.max_steps / state.num_train_epochs)
        core.set_steps_per_epoch(steps, state.num_train_epochs or args.num_train_epochs)
        # on_epoch_begin counts epochs from 0, or from the epoch a resumed run starts in
        self._epoch = -1
        if core.restored:
            core.restored = False
            core.check_timing()
            self._epoch = (state.global_step // int(steps) if steps else int(state.epoch or 0)) - 1
        core.begin(kwargs.get("optimizer"), [kwargs.get("lr_scheduler")], 0)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._epoch += 1
        self._core.start_mutual_if_due(self._epoch, kwargs.get("optimizer"), [kwargs.get("lr_scheduler")])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.teacher is not None:
            # the Trainer zeroes the model's gradients only; the teacher's own copies are not in it
            for p in self.teacher.parameters():
                p.grad = None
        self._ensure(kwargs.get("model"))
        self._core.step(kwargs.get("optimizer"), [kwargs.get("lr_scheduler")], max(self._epoch, 0))

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._core.check_teacher_called("compute_loss (use SqueezerTrainer)")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._core.export_at_end(state.is_world_process_zero)


class MutualLossMixin:
    """``compute_loss`` for PQK's Phase 2, mixed into a ``transformers.Trainer`` subclass.

    Before Phase 2 (and without a :class:`SqueezerTrainerCallback` with ``mutual``) the loss is the
    ``Trainer``'s own. Once ``callback.teacher`` exists, each batch runs the student and the
    self-teacher on the inputs without ``labels`` and returns ``callback.mutual_loss(student_logits,
    teacher_logits, labels)``: one backward trains the student's kept weights and the teacher's
    pruned-away ones. The logits are the outputs' ``logits`` (or first element); the loss is the
    Compression's task on ``labels`` (the recipe's ``task``: cross-entropy for classification, the
    shifted next-token loss for ``language_model``).

    It also lets the callback resume a run: ``train``, ``create_optimizer`` and
    ``create_scheduler`` hand it the optimizer and LR scheduler the Trainer creates (overrides of
    these in your subclass must call ``super()``).
    """

    def train(self, *args: Any, **kwargs: Any) -> Any:
        callback = self._squeezer_callback()
        if callback is not None:
            resume = kwargs.get("resume_from_checkpoint", args[0] if args else None)
            callback._trainer_restores(resuming=bool(resume))
        return super().train(*args, **kwargs)  # type: ignore[misc]

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        optimizer = super().create_optimizer(*args, **kwargs)  # type: ignore[misc]
        callback = self._squeezer_callback()
        if callback is not None:
            callback._watch_optimizer(optimizer)
        return optimizer

    def create_scheduler(self, *args: Any, **kwargs: Any) -> Any:
        scheduler = super().create_scheduler(*args, **kwargs)  # type: ignore[misc]
        callback = self._squeezer_callback()
        if callback is not None:
            callback._lr_schedulers = [scheduler]
        return scheduler

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
        loss = callback.mutual_loss(logits_of(outputs), logits_of(teacher_outputs), labels)
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


def declare_ties(model: nn.Module) -> None:
    """Tell Hugging Face's ``save_pretrained`` (the Trainer's checkpoints) about compressed tied weights.

    A tied weight's stored tensor, mask and quantizer are one set, reached from the parametrization
    at each of its paths. ``save_pretrained`` refuses tensors shared under names that no module's
    ``_tied_weights_keys`` declares, and saves a declared one once; so each other path's
    parametrization is declared tied to the first path's (the tie is restored by the model itself
    when the checkpoint loads: both names hold one tensor).
    """
    from squeezer.compress.weight import weight_aliases

    for path, others in weight_aliases(model).items():
        source_module, _, source_attr = path.rpartition(".")
        source = ".".join(filter(None, (source_module, "parametrizations", source_attr)))
        for alias in others:
            module_name, _, attr = alias.rpartition(".")
            owner = model.get_submodule(module_name) if module_name else model
            keys = dict(getattr(owner, "_tied_weights_keys", None) or {})
            keys[f"parametrizations.{attr}"] = source
            object.__setattr__(owner, "_tied_weights_keys", keys)  # a plain attribute, as HF models have

