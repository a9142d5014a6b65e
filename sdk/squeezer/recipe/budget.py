"""Stage lengths in steps or as shares of a budget, resolved to whole epochs once the data is known.

A stage's length is given in one unit (the mutual stage's warm-up too):

- epochs, as in every recipe so far: ``epochs``, a prune stage's ``epochs_per_round``, a mutual
  stage's ``warmup_epochs``;
- optimizer steps: ``steps``, ``steps_per_round``, ``warmup_steps``;
- a share of the recipe's ``[budget]`` (``epochs = N`` or ``steps = N``): ``share`` (a prune stage's
  share is its whole length, spread evenly over its rounds) and ``warmup_share``. A recipe with a
  budget gives every stage a share, and the shares sum to 1.

:func:`resolve_budget` turns such a recipe into the plain recipe that runs, in whole epochs of the
training loader's length: each part (a stage, a round, a warm-up) gets the nearest whole number of
epochs (half rounds up), and a part asked for more than nothing at least one epoch. So each part is
within half an epoch of what it asked for (or raised to its first epoch), and a larger budget
never shortens any part. Everything here is torch-free: ``squeezer recipe validate`` imports it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs

from squeezer.errors import ConfigError
from squeezer.recipe.configs import MutualStage, PruneStage, Recipe, Stage

if TYPE_CHECKING:
    from squeezer.registry import Registry

#: how far the shares may sum from 1 (0.333 + 0.333 + 0.334 is fine; 0.3 + 0.3 + 0.3 is not)
SHARE_TOLERANCE = 1e-3

#: length fields by unit: (main, warm-up) for each stage kind; "epochs" fields always have a value
_PRUNE = {"epochs": "epochs_per_round", "steps": "steps_per_round", "share": "share"}
_MAIN = {"epochs": "epochs", "steps": "steps", "share": "share"}
_WARMUP = {"epochs": "warmup_epochs", "steps": "warmup_steps", "share": "warmup_share"}
#: the optional fields this module adds to the format; unset, they are left out of a recipe's data
OPTIONAL_FIELDS = ("budget", "steps", "share", "steps_per_round", "warmup_steps", "warmup_share")


def length_fields(stage: Stage | type[Stage]) -> list[dict[str, str]]:
    """The stage's length parts (main, and a mutual stage's warm-up), each as unit -> field name."""
    cls = stage if isinstance(stage, type) else type(stage)
    main = _PRUNE if issubclass(cls, PruneStage) else _MAIN
    return [_WARMUP, main] if issubclass(cls, MutualStage) else [main]  # in the order they run


def check_one_unit(cls: type[Stage], raw: dict[str, Any], where: str) -> None:
    """A stage table gives each length once: ``epochs = 3`` and ``steps = 100`` together name the second."""
    for fields in length_fields(cls):
        given = [name for name in fields.values() if raw.get(name) is not None]
        if len(given) > 1:
            raise ConfigError(f"{where}.{given[1]}: the length is already given by {given[0]}; give one of "
                              f"{', '.join(fields.values())}")


def unit_of(stage: Stage, fields: dict[str, str]) -> str:
    """``"steps"`` or ``"share"`` if that field of the part is set, else ``"epochs"``."""
    for unit in ("steps", "share"):
        if getattr(stage, fields[unit]) is not None:
            return unit
    return "epochs"


def superseded(stage: Stage) -> set[str]:
    """The epoch fields a stage's steps or share replace (their defaults are not in effect)."""
    return {fields["epochs"] for fields in length_fields(stage) if unit_of(stage, fields) != "epochs"}


def first_unresolved(recipe: Recipe) -> str | None:
    """Where the recipe first gives a length in steps or a share (``stages[1].steps_per_round``),
    ``"budget"`` for a budget alone, ``None`` for a recipe in epochs only."""
    for i, stage in enumerate(recipe.stages):
        for fields in length_fields(stage):
            unit = unit_of(stage, fields)
            if unit != "epochs":
                return f"stages[{i}].{fields[unit]}"
    return "budget" if recipe.budget is not None else None


def needs_resolution(recipe: Recipe) -> bool:
    """Whether any stage length is in steps or a share (so it needs the loader's length)."""
    return recipe.budget is not None or any(superseded(s) for s in recipe.stages)


def check_budget(recipe: Recipe) -> None:
    """Shares need a ``[budget]``; a budget needs every length to be a share, and the shares to sum
    to 1. Errors name the file and the field (``r.toml: stages[1].share: ...``)."""
    src = recipe.source
    if recipe.budget is None:
        for i, stage in enumerate(recipe.stages):
            for fields in length_fields(stage):
                if getattr(stage, fields["share"]) is not None:
                    raise ConfigError(f"{src}: stages[{i}].{fields['share']}: a share of what? Add the total, "
                                      f"e.g. [budget] steps = 6000 (or epochs = 40), or give "
                                      f"{fields['steps']} or {fields['epochs']} instead")
        return
    total = 0.0
    shown = []
    for i, stage in enumerate(recipe.stages):
        for fields in length_fields(stage):
            share = getattr(stage, fields["share"])
            if share is None:
                step_field = fields["steps"]
                given = step_field if getattr(stage, step_field) is not None else fields["epochs"]
                raise ConfigError(f"{src}: stages[{i}].{fields['share']}: required: a recipe with a [budget] "
                                  f"gives every stage its share of it (a fraction; the shares sum to 1), "
                                  f"not {given}")
            total += share
            shown.append(f"stages[{i}].{fields['share']} = {share:g}")
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ConfigError(f"{src}: budget: the stages' shares sum to {total:.4g}, not 1 ({', '.join(shown)})")


@attrs.frozen
class Part:
    """One resolved length: a stage, a prune stage's rounds, or a mutual stage's warm-up."""

    stage: int
    field: str  # the epoch field that runs it: epochs, epochs_per_round or warmup_epochs
    given: str  # the field the recipe gave it in: one of those, or steps, share, warmup_share, ...
    asked: str  # what the recipe gave: "0.27 of 6000 steps", "1000 steps", "12 epochs"
    steps: float  # the steps asked for (per round for a prune stage)
    epochs: int  # the whole epochs it runs (per round for a prune stage)
    rounds: int | None = None  # a prune stage's rounds, where known


@attrs.frozen
class Resolution:
    """A recipe resolved against the loader: the plain recipe that runs, and how it was rounded."""

    recipe: Recipe
    steps_per_epoch: int
    parts: tuple[Part, ...] = ()
    budget_steps: int | None = None

    @property
    def changed(self) -> bool:
        """Whether any length was given in steps or as a share (else the recipe is as it was)."""
        return bool(self.parts)

    @property
    def rounded(self) -> tuple[Part, ...]:
        """The parts whose whole epochs differ from the steps they asked for."""
        spe = self.steps_per_epoch
        return tuple(p for p in self.parts if abs(p.steps - p.epochs * spe) > 1e-6 * spe)

    @property
    def total_epochs(self) -> int | None:
        """The epochs all stages run (``None`` where a prune stage's rounds are unknown)."""
        if any(p.field == "epochs_per_round" and p.rounds is None for p in self.parts):
            return None
        return sum(p.epochs * (p.rounds or 1) for p in self.parts)

    def notes(self) -> list[tuple[str, str]]:
        """``(text, level)`` lines for the run's output: the plan in epochs; which parts were rounded,
        and how; a warning for each part raised to a first epoch. None for a recipe in epochs only."""
        if not self.parts:
            return []
        spe = self.steps_per_epoch
        plan = ", ".join(f"{self._name(p)} {_span(p)}" for p in self.parts)
        head = (f"budget {self.budget_steps} steps = {_epochs(self.budget_steps / spe)} of {spe} steps; "
                if self.budget_steps is not None else "")
        total = self.total_epochs
        end = f"; {_count(total, 'epoch')} ({total * spe} steps) in all" if total is not None else ""
        out = [(f"{head}the stages run whole epochs of {spe} steps: {plan}{end}", "info")]
        rounded = self.rounded
        if rounded:
            shown = ", ".join(f"{self._name(p)} {_number(p.steps / spe)} -> {p.epochs}"
                              f"{' per round' if p.field == 'epochs_per_round' else ''}" for p in rounded)
            out.append((f"lengths in steps or shares rounded to the nearest whole epoch: {shown}", "info"))
        for p in rounded:
            if 0 < p.steps < spe / 2:
                out.append((f"stages[{p.stage}].{p.given}: {self._name(p)} asks "
                            f"{p.asked} = {_epochs(p.steps / spe)}, which runs as one epoch ({spe} steps): "
                            f"squeezer runs whole epochs of the training loader", "warning"))
        return out

    def _name(self, part: Part) -> str:
        label = self.recipe.stages[part.stage].label
        return f"{label} warm-up" if part.field == "warmup_epochs" else label


def whole_epochs(steps: float, steps_per_epoch: int) -> int:
    """The epochs a part of ``steps`` steps runs: the nearest whole number (half rounds up), and at
    least one for any part asked for more than nothing."""
    if steps <= 0:
        return 0
    return max(1, math.floor(steps / steps_per_epoch + 0.5))


def prune_rounds(recipe: Recipe, registry: Registry) -> dict[int, int]:
    """The pruning rounds of each prune stage (by index), from its scheduler in ``registry``."""
    from squeezer.recipe.loader import check_strategy, checked_schedule

    rounds = {}
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, PruneStage):
            where = f"{recipe.source}: stages[{i}].scheduler"
            scheduler = check_strategy(registry, "scheduler", stage.scheduler, where)
            rounds[i] = len(checked_schedule(scheduler, f"{where} ({stage.scheduler.name})"))
    return rounds


def resolve_budget(recipe: Recipe, steps_per_epoch: int, rounds: dict[int, int] | None = None, *,
                   registry: Registry | None = None) -> Resolution:
    """``recipe`` with every length in whole epochs of ``steps_per_epoch`` optimizer steps (the
    training loader's ``len()``; under torchrun, one process's share of it).

    A prune stage given a ``share`` spreads it over its rounds: ``rounds`` gives them by stage
    index, or ``registry`` (the recipe's schedulers are asked). A recipe in epochs only comes back
    unchanged (and :attr:`Resolution.changed` is false)::

        resolved = resolve_budget(recipe, len(train_loader), registry=squeezer.load_registry()).recipe
    """
    check_budget(recipe)
    if not needs_resolution(recipe):
        return Resolution(recipe, steps_per_epoch)
    if registry is not None:
        rounds = {**prune_rounds(recipe, registry), **(rounds or {})}
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ConfigError(f"{recipe.source}: the recipe gives stage lengths in steps or as shares, which needs "
                          f"the training loader's length (its steps per epoch), got {steps_per_epoch!r}")
    spe, budget, rounds = steps_per_epoch, recipe.budget, rounds or {}
    total = None
    if budget is not None:
        total = budget.steps if budget.steps is not None else (budget.epochs or 0) * spe
    parts: list[Part] = []
    stages = []
    for i, stage in enumerate(recipe.stages):
        changes: dict[str, Any] = {}
        n_rounds = rounds.get(i) if isinstance(stage, PruneStage) else None
        for fields in length_fields(stage):
            unit = unit_of(stage, fields)
            value = getattr(stage, fields[unit])
            if unit == "epochs":
                parts.append(Part(i, fields["epochs"], fields["epochs"], f"{value} epochs", float(value * spe),
                                  value, n_rounds))
                continue
            if unit == "share":
                assert total is not None  # check_budget: shares come with a budget
                asked, steps = f"{value:g} of {_budget_text(recipe)}", value * total
                if isinstance(stage, PruneStage):
                    if n_rounds is None or n_rounds < 1:
                        raise ConfigError(f"{recipe.source}: stages[{i}].share: spreading a share over the "
                                          f"pruning rounds needs their number (from the stage's scheduler)")
                    asked, steps = f"{asked} over {n_rounds} rounds", steps / n_rounds
            else:
                asked, steps = f"{value} steps", float(value)
            epochs = whole_epochs(steps, spe)
            parts.append(Part(i, fields["epochs"], fields[unit], asked, steps, epochs, n_rounds))
            changes[fields["epochs"]] = epochs
            changes[fields[unit]] = None
        stages.append(attrs.evolve(stage, **changes) if changes else stage)
    resolved = attrs.evolve(recipe, stages=tuple(stages), budget=None)
    return Resolution(resolved, spe, tuple(parts), total)


def _budget_text(recipe: Recipe) -> str:
    budget = recipe.budget
    assert budget is not None
    return f"{budget.steps} steps" if budget.steps is not None else f"{budget.epochs} epochs"


def _span(part: Part) -> str:
    if part.field == "epochs_per_round":
        return f"{part.rounds if part.rounds is not None else '?'} x {_count(part.epochs, 'epoch')}"
    return _count(part.epochs, "epoch")


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _epochs(value: float) -> str:
    text = _number(value)
    return f"{text} epoch{'' if text == '1' else 's'}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
