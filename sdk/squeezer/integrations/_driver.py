"""What both trainer integrations share: a :class:`~squeezer.session.Compression` from a recipe,
counting optimizer steps, param groups added to an optimizer the trainer owns (and to its LR
schedulers), Phase 2 set-up, and gradient averaging for parameters DDP does not know about.

Nothing here imports a trainer library.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from squeezer.compress.teacher import SelfTeacher
from squeezer.engine.schedule import Schedule, kd_weight
from squeezer.errors import ConfigError
from squeezer.recipe.configs import MutualStage, PruneStage, Recipe, TrainStage
from squeezer.registry import Registry
from squeezer.session import Compression

#: what an integration accepts: a ready :class:`Compression`, a loaded recipe, or a recipe file
Source = Compression | Recipe | str | os.PathLike[str]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer behind a trainer's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``), or ``None``."""
    seen = 0
    while optimizer is not None and seen < 4:
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer, seen = inner, seen + 1
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def cover_new_groups(optimizer: torch.optim.Optimizer, schedulers: Iterable[Any], known: int) -> None:
    """Let LR schedulers built for the first ``known`` param groups drive the groups added since.

    torch's schedulers keep one entry per group (``base_lrs``, ``lr_lambdas``, ``min_lrs``) and
    zip them strictly with ``param_groups``; a new group gets group 0's schedule (its keys the
    scheduler wrote, such as ``initial_lr``, and its lambda).
    """
    groups = optimizer.param_groups
    if len(groups) <= known:
        return
    first = groups[0]
    for group in groups[known:]:
        for key, value in first.items():
            if key not in group:
                group[key] = value
        group.setdefault("initial_lr", group["lr"])
    for scheduler in schedulers:
        while scheduler is not None and not hasattr(scheduler, "base_lrs") and hasattr(scheduler, "scheduler"):
            scheduler = scheduler.scheduler  # accelerate's AcceleratedScheduler
        if scheduler is None:
            continue
        for attr in ("base_lrs", "lr_lambdas", "min_lrs"):
            values = getattr(scheduler, attr, None)
            if not isinstance(values, list) or len(values) != known:
                continue
            for group in groups[known:]:
                values.append(group["initial_lr"] if attr == "base_lrs" else values[0])


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _average_gradient(p: torch.Tensor) -> None:
    """Post-accumulate-grad hook: the mean of ``p.grad`` over the ranks. Under gradient
    accumulation it runs after every micro-batch; the part already averaged stays the same."""
    import torch.distributed as dist

    if p.grad is not None:
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """All-reduce (mean) the gradients of ``params`` across the default process group, for
    parameters created after DDP wrapped the model (quantizer steps, teacher copies)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    world = dist.get_world_size()
    for p in params:
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(grad)
        grad /= world
        p.grad = grad


def _check_stages(recipe: Recipe) -> PruneStage:
    """The recipe's prune stage, after checking a trainer callback can run its stages: ``train``
    stages, exactly one ``prune`` and at most one ``mutual``, which comes last."""
    prunes = [s for s in recipe.stages if isinstance(s, PruneStage)]
    if len(prunes) != 1:
        raise ConfigError(f"{recipe.source}: a trainer callback runs exactly one prune stage, "
                          f"the recipe has {len(prunes)}")
    for i, stage in enumerate(recipe.stages):
        where = f"{recipe.source}: stages[{i}] ({stage.label})"
        if not isinstance(stage, TrainStage | PruneStage | MutualStage):
            raise ConfigError(f"{where}: a trainer callback runs train, prune and mutual stages, not "
                              f"{stage.TYPE!r}; run this recipe with `squeezer run`")
        if isinstance(stage, MutualStage) and i != len(recipe.stages) - 1:
            raise ConfigError(f"{where}: with a trainer callback the mutual stage must be the last stage")
    return prunes[0]


class Plan:
    """How to build the :class:`Compression` once the model exists, and Phase 2's settings."""

    def __init__(self, source: Source, *, prune_every: int | None, mutual: bool | MutualStage | None,
                 registry: Registry | None) -> None:
        if isinstance(prune_every, bool) or (prune_every is not None and (not isinstance(prune_every, int)
                                                                          or prune_every < 1)):
            raise ConfigError(f"prune_every: must be a positive integer, got {prune_every!r}")
        self.compression: Compression | None = None
        self.recipe: Recipe | None = None
        self.prune_stage: PruneStage | None = None
        self.registry = registry
        self.prune_every = prune_every
        self.timeline: Schedule | None = None
        recipe_mutual: MutualStage | None = None
        if isinstance(source, Compression):
            if prune_every is not None:
                raise ConfigError("prune_every: set it on the Compression you pass, not on the callback")
            self.compression = source
            self.registry = source.registry
        else:
            if isinstance(source, Recipe):
                self.recipe = source
            elif isinstance(source, str | os.PathLike):
                from squeezer.recipe import load_recipe

                if self.registry is None:
                    from squeezer.plugin_manager import load_registry

                    self.registry = load_registry()
                self.recipe = load_recipe(os.fspath(source), self.registry)
            else:
                raise ConfigError(f"expected a Compression, a Recipe or a recipe path, got {type(source).__name__}")
            self.prune_stage = _check_stages(self.recipe)
            recipe_mutual = next((s for s in self.recipe.stages if isinstance(s, MutualStage)), None)
        if mutual is None:
            mutual = recipe_mutual if recipe_mutual is not None else False
        elif mutual is True:
            mutual = recipe_mutual if recipe_mutual is not None else MutualStage()
        #: Phase 2's stage (its warm-up, KD weight and teacher settings), or None without Phase 2
        self.mutual: MutualStage | None = mutual if isinstance(mutual, MutualStage) else None

    def build(self, model: nn.Module) -> Compression:
        """The Compression (built on ``model`` from the recipe on first call); ``prune_every`` may
        still be unknown (it is set by :meth:`set_steps_per_epoch`)."""
        if self.compression is not None:
            return self.compression
        stage, recipe = self.prune_stage, self.recipe
        assert stage is not None and recipe is not None
        extra: dict[str, Any] = {}
        if self.mutual is not None:
            d = self.mutual.distillation
            extra["distillation"] = (d.name, dict(d.options))
        self.compression = Compression(
            model, targets=recipe.targets,
            importance=(stage.importance.name, dict(stage.importance.options)),
            schedule=(stage.scheduler.name, dict(stage.scheduler.options)),
            quantizer=stage.quantizer, scope=stage.scope, min_density=stage.min_density,
            prune_every=self.prune_every or 1, registry=self.registry, **extra,
        )
        return self.compression

    def set_steps_per_epoch(self, steps: float | None) -> None:
        """From a recipe without an explicit ``prune_every``: lay its stages on the trainer's epochs
        of ``steps`` optimizer steps, as ``squeezer run`` runs them (:class:`squeezer.engine.schedule.Schedule`)."""
        if self.prune_every is not None or self.recipe is None or self.compression is None:
            return
        if steps is None or steps != steps or steps in (float("inf"),) or steps < 1:
            raise ConfigError("prune_every: the number of steps per epoch is unknown (a data loader without "
                              "len()); pass prune_every= to the callback")
        self.timeline = Schedule.of(self.recipe, len(self.compression.schedule))
        self.compression.prune_start, self.compression.prune_every = self.timeline.prune_steps(int(steps))


class Driver:
    """Per-step bookkeeping around a :class:`Compression` for a trainer that owns the optimizer.

    Every parameter compression trains exists from :meth:`Compression.attach` on (the quantizers,
    pending until the first round), so the trainer's optimizer and DDP already hold them; the
    driver extends the LR schedulers to the param groups the engine moves or adds (the first round
    takes the stored weights and quantizer steps out of weight decay, Phase 2 adds the teacher's
    copies); a resumed run does the same from the counters (:meth:`link`, :meth:`start_mutual`).
    """

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self.added: list[torch.Tensor] = []  # parameters DDP does not know (the teacher's copies)
        #: average the new parameters' gradients across ranks as backward accumulates them,
        #: for trainers that clip gradients before any hook a callback gets (HF's Trainer)
        self.average_in_backward = False
        self._unlinked = False  # pruned while no optimizer was at hand
        self.done_at_epoch: int | None = None
        #: the optimizer's number of param groups when the driver first saw it (before its own)
        self.base_groups: int | None = None

    def begin(self, optimizer: Any, schedulers: Iterable[Any] = (), epoch: int = 0) -> bool:
        """Before the first step of ``epoch``: run the rounds already due (a recipe whose prune
        stage comes first prunes before training). Returns True when it pruned."""
        return self._prune(self.compression.prune_due, optimizer, schedulers, epoch - 1)

    def step(self, optimizer: Any, schedulers: Iterable[Any] = (), epoch: int = 0) -> bool:
        """Count one optimizer step; returns True when it pruned."""
        return self._prune(self.compression.step, optimizer, schedulers, epoch)

    def _prune(self, advance: Callable[[torch.optim.Optimizer | None], object], optimizer: Any,
               schedulers: Iterable[Any], epoch: int) -> bool:
        comp = self.compression
        opt = self._seen(optimizer)
        if opt is not None and self._unlinked:
            self.link(opt, schedulers)
            self._unlinked = False
        known = len(opt.param_groups) if opt is not None else 0
        pruned = advance(opt) is not None
        if opt is None:
            self._unlinked |= pruned
        else:
            cover_new_groups(opt, list(schedulers), known)
        if pruned and comp.done and self.done_at_epoch is None:
            self.done_at_epoch = epoch
        return pruned

    def _track(self, params: Sequence[torch.Tensor]) -> None:
        self.added += params
        if self.average_in_backward and _world_size() > 1:
            for p in params:
                p.register_post_accumulate_grad_hook(_average_gradient)

    def _seen(self, optimizer: Any) -> torch.optim.Optimizer | None:
        opt = unwrap_optimizer(optimizer)
        if opt is not None and self.base_groups is None:
            self.base_groups = len(opt.param_groups)
        return opt

    def link(self, optimizer: Any, schedulers: Iterable[Any] = ()) -> None:
        """What the first round asks of the optimizer (:meth:`Compression.link_optimizer`), with
        the LR schedulers extended to the groups it moved or added; a resumed run calls it again."""
        opt = self._seen(optimizer)
        assert opt is not None
        known = len(opt.param_groups)
        self.compression.link_optimizer(opt)
        cover_new_groups(opt, list(schedulers), known)

    def start_mutual(self, settings: MutualStage, optimizer: Any, schedulers: Iterable[Any] = ()) -> SelfTeacher:
        """Phase 2: build the self-teacher, add its parameters to ``optimizer`` and take weight
        decay off the shared storage."""
        opt = unwrap_optimizer(optimizer)
        if opt is None:
            raise ConfigError("Phase 2 needs the trainer's optimizer, and none was found")
        self.link(opt, schedulers)
        known = len(opt.param_groups)
        teacher = self.compression.self_teacher(opt, owns=settings.teacher_owns, quantized=settings.teacher_quantized)
        self._track([p for p in teacher.parameters() if p.requires_grad])
        cover_new_groups(opt, list(schedulers), known)
        return teacher


def check_part_of(model: nn.Module, root: nn.Module, where: str) -> None:
    """``model`` must be ``root`` or one of its submodules."""
    if not any(m is model for m in root.modules()):
        raise ConfigError(f"{where}: the Compression's model is not part of the trained model")


def submodule(root: nn.Module, path: str | None) -> nn.Module:
    """``root`` or its submodule at the dotted ``path``."""
    if not path:
        return root
    try:
        return root.get_submodule(path)
    except AttributeError as exc:
        raise ConfigError(f"module: {type(root).__name__} has no submodule {path!r}") from exc


class MutualPhase:
    """Phase 2 bookkeeping shared by the trainer callbacks: building the driver, when Phase 2
    starts, its distillation weight, the self-teacher, and whether the user's code calls it."""

    _plan: Plan
    module: str | None
    export_path: str | os.PathLike[str] | None
    export_info: dict[str, Any]

    def _configure(self, source: Source, module: str | None, prune_every: int | None,
                   mutual: bool | MutualStage | None, export: str | os.PathLike[str] | None,
                   export_info: Mapping[str, Any] | None, registry: Registry | None) -> None:
        """The constructor arguments both callbacks take (see their docstrings)."""
        if isinstance(source, Compression) and module is not None:
            raise ConfigError("module: the Compression you pass already names its model")
        self._plan = Plan(source, prune_every=prune_every, mutual=mutual, registry=registry)
        self.module = module
        self.export_path = export
        self.export_info = dict(export_info or {})
        self._init_phase()

    def _export_at_end(self, is_main: bool, owner: str) -> None:
        """When training ends: warn if rounds are missing, then write the artifact (main process)."""
        if self._driver is None or self.export_path is None:
            return
        comp = self._driver.compression
        if not comp.done:
            warnings.warn(f"{owner}: training ended after {comp.rounds_done} of {len(comp.schedule)} pruning "
                          "rounds; the artifact is less sparse than scheduled", stacklevel=2)
        if is_main:
            was_training = comp.model.training
            comp.model.eval()
            comp.export(self.export_path, info=self.export_info or None)
            comp.model.train(was_training)

    def _init_phase(self) -> None:
        self._driver: Driver | None = None
        self._mutual_epoch: int | None = None
        self._teacher_calls = 0
        self.teacher: SelfTeacher | None = None
        """The self-teacher during Phase 2, else ``None``; call it like the model."""

    @property
    def compression(self) -> Compression:
        raise NotImplementedError

    @property
    def mutual(self) -> MutualStage | None:
        """Phase 2's settings, or ``None`` without Phase 2."""
        return self._plan.mutual

    @property
    def kd_weight(self) -> float:
        """The distillation weight now: 0 during the first ``warmup_epochs`` of Phase 2."""
        return self._kd_weight_at(self._current_epoch())

    def _current_epoch(self) -> int | None:
        raise NotImplementedError

    def _kd_weight_at(self, epoch: int | None) -> float:
        stage = self._plan.mutual
        if stage is None or self._mutual_epoch is None or epoch is None:
            return 0.0
        return kd_weight(stage, epoch - self._mutual_epoch)

    def mutual_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
        """Phase 2's loss of a batch (:meth:`Compression.mutual_loss` with :attr:`kd_weight`)."""
        return self.compression.mutual_loss(student_logits, teacher_logits, targets, kd_weight=self.kd_weight)

    def _build_driver(self, root: nn.Module, owner: str) -> Driver:
        """Attach the plan's compression to ``root`` (or its ``module`` submodule)."""
        if self._plan.compression is not None:
            check_part_of(self._plan.compression.model, root, owner)
        comp = self._plan.build(submodule(root, self.module))
        comp.attach()
        self._driver = Driver(comp)
        return self._driver

    def _start_mutual_if_due(self, epoch: int, optimizer: Any, schedulers: Iterable[Any]) -> None:
        """Start Phase 2 at the recipe's mutual epoch, or else at the first epoch after the last
        pruning round."""
        driver, settings = self._driver, self._plan.mutual
        if driver is None or settings is None or self.teacher is not None or driver.done_at_epoch is None:
            return
        timeline = self._plan.timeline
        if timeline is not None and timeline.mutual_epoch is not None:
            due = timeline.mutual_epoch
        else:
            due = driver.done_at_epoch + 1
        if epoch < due:
            return
        self.teacher = driver.start_mutual(settings, optimizer, schedulers)
        self.teacher.register_forward_pre_hook(self._count_teacher_call)
        self._mutual_epoch = epoch

    def _count_teacher_call(self, *_: Any) -> None:
        self._teacher_calls += 1
