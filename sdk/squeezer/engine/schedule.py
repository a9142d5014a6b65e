"""When things happen: a recipe's stages laid on epochs, for the recipe runner and the callbacks alike.

``squeezer run`` runs the stages one after another; a trainer callback runs them on the
trainer's one epoch counter. Both ask this module when a pruning round runs and what Phase 2's
distillation weight is, so the two cannot disagree:

- a ``prune`` stage of ``R`` rounds and ``E`` epochs per round lasts ``R * E`` epochs; round 0
  runs before its first epoch and round ``r`` before its epoch ``r * E`` (so every round, the
  last included, is followed by its QAT epochs); with ``E = 0`` every round runs at once;
- a ``mutual`` stage distils with ``kd_weight`` from its epoch ``warmup_epochs`` on, and with
  weight 0 (the warm-up: cross-entropy only) before.

Everything here is in whole epochs. A recipe whose lengths are in steps or shares of a budget is
resolved to epochs first, once the loader's length is known
(:func:`squeezer.recipe.resolve_budget`; :meth:`Schedule.for_loader` does both).
"""

from __future__ import annotations

import warnings

import attrs

from squeezer.errors import ConfigError
from squeezer.recipe.budget import first_unresolved, resolve_budget
from squeezer.recipe.configs import MutualStage, PruneStage, Recipe


def rounds_before(epoch: int, rounds: int, epochs_per_round: int) -> range:
    """The pruning rounds that run before epoch ``epoch`` of a prune stage (counted from 0)."""
    if epochs_per_round == 0:
        return range(rounds) if epoch == 0 else range(0)
    if epoch % epochs_per_round or epoch // epochs_per_round >= rounds:
        return range(0)
    return range(epoch // epochs_per_round, epoch // epochs_per_round + 1)


def prune_epochs(rounds: int, epochs_per_round: int) -> int:
    """How many epochs a prune stage of ``rounds`` rounds trains."""
    return rounds * epochs_per_round


def kd_weight(stage: MutualStage, epoch: int) -> float:
    """Phase 2's distillation weight in epoch ``epoch`` of the mutual stage (0 during the warm-up)."""
    if stage.warmup_steps is not None or stage.warmup_share is not None:
        raise ConfigError("mutual stage: its warm-up is in steps or a share; resolve the recipe against the "
                          "loader first (squeezer.recipe.resolve_budget)")
    return stage.kd_weight if epoch >= stage.warmup_epochs else 0.0


@attrs.frozen
class Schedule:
    """A recipe's stages on one epoch counter, as ``squeezer run`` lays them out: the epoch the
    prune stage starts, its epochs per round, the epoch Phase 2 starts, and the total."""

    prune_epoch: int
    epochs_per_round: int
    mutual_epoch: int | None
    total_epochs: int

    @classmethod
    def of(cls, recipe: Recipe, rounds: int) -> Schedule:
        """The stages of ``recipe`` (in epochs) with ``rounds`` pruning rounds; a recipe with
        lengths in steps or shares is a ConfigError (see :meth:`for_loader`)."""
        where = first_unresolved(recipe)
        if where is not None:
            raise ConfigError(f"{recipe.source}: {where}: the recipe gives stage lengths in steps or as shares, "
                              f"which need the loader's steps per epoch: use Schedule.for_loader(recipe, "
                              f"rounds, steps_per_epoch) or squeezer.recipe.resolve_budget first")
        epoch, prune_epoch, per, mutual_epoch = 0, 0, 0, None
        for stage in recipe.stages:
            if isinstance(stage, PruneStage):
                prune_epoch, per = epoch, stage.epochs_per_round
                epoch += prune_epochs(rounds, per)
            elif isinstance(stage, MutualStage):
                mutual_epoch = epoch
                epoch += stage.warmup_epochs + stage.epochs
            else:
                epoch += stage.epochs
        return cls(prune_epoch=prune_epoch, epochs_per_round=per, mutual_epoch=mutual_epoch, total_epochs=epoch)

    @classmethod
    def for_loader(cls, recipe: Recipe, rounds: int, steps_per_epoch: int) -> Schedule:
        """:meth:`of` the recipe resolved to whole epochs of ``steps_per_epoch`` steps (lengths in
        steps or shares rounded as :func:`squeezer.recipe.resolve_budget` says; ``rounds`` is the
        pruning rounds of the recipe's prune stage)."""
        prune = {i: rounds for i, s in enumerate(recipe.stages) if isinstance(s, PruneStage)}
        return cls.of(resolve_budget(recipe, steps_per_epoch, prune).recipe, rounds)

    def prune_steps(self, steps_per_epoch: int) -> tuple[int, int]:
        """``(prune_start, prune_every)`` in optimizer steps, for :class:`squeezer.Compression`."""
        return self.prune_epoch * steps_per_epoch, self.epochs_per_round * steps_per_epoch

    def check_fits(self, epochs: float | None, owner: str) -> None:
        """Warn when the trainer stops before the recipe's stages end."""
        if epochs is not None and 0 < epochs < self.total_epochs:
            warnings.warn(f"{owner}: the recipe's stages span {self.total_epochs} epochs but the trainer runs "
                          f"{epochs:g}; the later rounds or Phase 2 will not run", stacklevel=3)
