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
- ``on_step_end`` (after each optimizer step) runs :meth:`Compression.step`: a pruning round every
  ``prune_every`` steps (from a recipe: one per ``epochs_per_round`` epochs); the quantizers'
  parameters join the trainer's optimizer (``kwargs["optimizer"]``, unwrapped from accelerate's
  wrapper; held back until one exists) and its LR scheduler;
- ``on_train_end``: the artifact, written by the main process only (``export=``).

PQK's Phase 2 (mutual learning) needs a second forward in the loss, which a callback cannot add to
the HF ``Trainer``: override ``Trainer.compute_loss`` and use ``callback.compression.self_teacher``
and ``mutual_loss`` as in a plain loop (see :mod:`squeezer.session`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import transformers
from torch import nn

from squeezer.integrations._driver import Driver, Plan, Source, check_part_of, submodule
from squeezer.registry import Registry
from squeezer.session import Compression

__all__ = ["SqueezerTrainerCallback"]


class SqueezerTrainerCallback(transformers.TrainerCallback):
    """Prune and quantize inside ``transformers.Trainer.train``.

    ``source``: a :class:`~squeezer.session.Compression` on the trainer's model (or a submodule),
    or a recipe (a ``Recipe`` or a path) with one ``prune`` stage whose ``targets`` apply to
    ``module`` (a dotted submodule path; default the whole model). ``prune_every`` (recipe only):
    optimizer steps between rounds. ``export``: the artifact path written when training ends.
    """

    def __init__(
        self,
        source: Source,
        *,
        module: str | None = None,
        prune_every: int | None = None,
        export: str | os.PathLike[str] | None = None,
        export_info: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self._plan = Plan(source, prune_every=prune_every, mutual=False, registry=registry)
        self.module = module
        self.export_path = export
        self.export_info = dict(export_info or {})
        self._driver: Driver | None = None

    @property
    def compression(self) -> Compression:
        """The :class:`Compression` driven by the callback."""
        if self._driver is None:
            from squeezer.errors import ConfigError

            raise ConfigError("the callback builds its Compression when the Trainer is created")
        return self._driver.compression

    def _ensure(self, model: nn.Module | None) -> Driver | None:
        if self._driver is None and model is not None:
            if self._plan.compression is not None:
                check_part_of(self._plan.compression.model, model, "SqueezerTrainerCallback")
            comp = self._plan.build(submodule(model, self.module))
            comp.attach()
            self._driver = Driver(comp)
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

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        driver = self._ensure(kwargs.get("model"))
        if driver is not None:
            driver.step(kwargs.get("optimizer"), [kwargs.get("lr_scheduler")], int(state.epoch or 0))

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
