"""What both trainer callbacks do, with no trainer library imported: one :class:`Core` per callback.

The core builds the :class:`~squeezer.session.Compression` (from a recipe, or takes the one
given), turns the trainer's optimizer steps into pruning rounds, starts Phase 2, and saves and
restores what the trainer's own checkpoint lacks. A callback only translates its trainer's hooks
into these calls.

Every parameter compression trains exists from :meth:`Compression.attach` on (the quantizers,
pending until the first round), so the trainer's optimizer and DDP already hold them. Two changes
to the trainer's optimizer remain, both derived from the counters (so a resumed run redoes them):
after the first round the stored weights and quantizer steps move to param groups without weight
decay (as the recipe runner's groups have them), and Phase 2 adds the teacher's private copies,
which cannot exist earlier: registered in the user's model they would be unused parameters under
DDP during Phase 1 and change its ``state_dict``. The LR schedulers are extended to the new groups.

Resuming: the trainer's checkpoint holds the model's ``state_dict`` (masks, stored weights, the
quantizers' values) and the optimizer's and schedulers' states. The callback saves the rest
(:meth:`Core.state`): the settings, the counters, the compression structure
(:func:`squeezer.compress.spec`), the optimizer's number of param groups and Phase 2's state. A
resumed run (a fresh model, callback and trainer) attaches the masks and pending quantizers before
the trainer builds its optimizer, so the model's ``state_dict`` loads as saved (:class:`LoadWatch`
refuses one without the masks); once the optimizer exists and before it loads its state,
:meth:`Core.restore` compares the settings, switches on the quantizers the first run had on,
restores the counters and redoes the optimizer changes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from squeezer import compress
from squeezer.compress.teacher import SelfTeacher
from squeezer.compress.weight import CompressedWeight, compressed_weights
from squeezer.engine.schedule import Schedule, kd_weight
from squeezer.errors import ConfigError
from squeezer.recipe.budget import needs_resolution, resolve_budget
from squeezer.recipe.configs import MutualStage, PruneStage, Recipe, TrainStage
from squeezer.recipe.loader import recipe_to_dict
from squeezer.registry import Registry
from squeezer.session import Compression

#: what a callback accepts: a ready :class:`Compression`, a loaded recipe, or a recipe file
Source = Compression | Recipe | str | os.PathLike[str]
#: the version of the callback state; a checkpoint with another one is refused
VERSION = 2
_UNSET = object()


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer behind a trainer's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``), or ``None``."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
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
    for group in groups[known:]:
        for key, value in groups[0].items():
            group.setdefault(key, value)
        group.setdefault("initial_lr", group["lr"])
    for scheduler in schedulers:
        while scheduler is not None and not hasattr(scheduler, "base_lrs") and hasattr(scheduler, "scheduler"):
            scheduler = scheduler.scheduler  # accelerate's AcceleratedScheduler
        for attr in ("base_lrs", "lr_lambdas", "min_lrs"):
            values = getattr(scheduler, attr, None)
            if isinstance(values, list) and len(values) == known:
                values += [g["initial_lr"] if attr == "base_lrs" else values[0] for g in groups[known:]]


def _average_gradient(p: torch.Tensor) -> None:
    """Post-accumulate-grad hook: the mean of ``p.grad`` over the ranks, for a parameter DDP does
    not know (the teacher's copies). It runs while backward runs, before any gradient clipping;
    under gradient accumulation after every micro-batch (the part already averaged stays so)."""
    import torch.distributed as dist

    if p.grad is not None:
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _load_recipe(source: Recipe | str | os.PathLike[str], registry: Registry | None) -> tuple[Recipe, Registry]:
    if not isinstance(source, Recipe | str | os.PathLike):
        raise ConfigError(f"expected a Compression, a Recipe or a recipe path, got {type(source).__name__}")
    if registry is None:
        from squeezer.plugin_manager import load_registry

        registry = load_registry()
    if isinstance(source, Recipe):
        return source, registry
    from squeezer.recipe import load_recipe

    return load_recipe(os.fspath(source), registry), registry


def _prune_stage(recipe: Recipe) -> PruneStage:
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


def _submodule(root: nn.Module, path: str | None) -> nn.Module:
    """``root`` or its submodule at the dotted ``path``."""
    try:
        return root.get_submodule(path) if path else root
    except AttributeError as exc:
        raise ConfigError(f"module: {type(root).__name__} has no submodule {path!r}") from exc


def _json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), so saved and current settings compare;
    a value JSON lacks becomes a stand-in that is the same in every process (no memory addresses)."""
    def plain(v: Any) -> Any:
        if isinstance(v, set | frozenset):
            return sorted(map(str, v))
        return f"<{type(v).__qualname__}>" if " at 0x" in str(v) else str(v)

    return json.loads(json.dumps(value, sort_keys=True, default=plain))


def _show(value: Any) -> str:
    text = "unset" if value is _UNSET else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _differences(saved: Any, now: Any, key: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in [*now, *(k for k in saved if k not in now)]
                for d in _differences(saved.get(k, _UNSET), now.get(k, _UNSET), f"{key}.{k}" if key else k)]
    return [] if saved == now else [f"{key} (checkpoint {_show(saved)}, now {_show(now)})"]


def _options(strategy: Any) -> dict[str, Any]:
    cls = type(strategy)
    return {a.name: getattr(strategy, a.name) for a in attrs.fields(cls) if a.init} if attrs.has(cls) else {}


class LoadWatch:
    """A ``load_state_dict`` pre-hook on the compressed model while a run may be resuming.

    It refuses a ``state_dict`` without the masks (one written without the callback), which a
    non-strict load would otherwise skip silently. ``on_load`` runs when one is loaded.
    """

    def __init__(self, model: nn.Module, owner: str, on_load: Callable[[], None] | None = None) -> None:
        self.model, self.owner, self.on_load = model, owner, on_load
        self.loaded = False
        register = getattr(model, "register_load_state_dict_pre_hook", None)  # public from torch 2.5
        self._handle = register(self._hook) if register is not None else (
            model._register_load_state_dict_pre_hook(self._hook, with_module=True))

    def remove(self) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        weights = [name for name, m in self.model.named_modules() if isinstance(m, CompressedWeight)]
        missing = next((prefix + n + ".mask" for n in weights if prefix + n + ".mask" not in state_dict), None)
        if missing is not None:
            raise ConfigError(f"{self.owner}: the state_dict being loaded has no {missing!r}: resume from a "
                              "checkpoint written by a run with this callback (the same targets)")
        if weights and self.on_load is not None:
            self.on_load()
        self.loaded = self.loaded or bool(weights)


class Core:
    """One callback's compression: built on the trainer's model by :meth:`attach`, advanced by
    :meth:`begin` / :meth:`step` / :meth:`start_mutual_if_due`, saved by :meth:`state` and
    restored by :meth:`restore` (see the module docstring)."""

    def __init__(self, owner: str, source: Source, *, module: str | None, prune_every: int | None,
                 mutual: bool | MutualStage | None, export: str | os.PathLike[str] | None,
                 export_info: Mapping[str, Any] | None, registry: Registry | None) -> None:
        if isinstance(prune_every, bool) or (prune_every is not None and (not isinstance(prune_every, int)
                                                                          or prune_every < 1)):
            raise ConfigError(f"prune_every: must be a positive integer, got {prune_every!r}")
        self.owner, self.module, self.prune_every = owner, module, prune_every
        self.export_path, self.export_info = export, dict(export_info or {})
        self.given: Compression | None = None
        self.recipe: Recipe | None = None
        self.prune_stage: PruneStage | None = None
        recipe_mutual: MutualStage | None = None
        if isinstance(source, Compression):
            if module is not None:
                raise ConfigError("module: the Compression you pass already names its model")
            if prune_every is not None:
                raise ConfigError("prune_every: set it on the Compression you pass, not on the callback")
            self.given, self.registry = source, source.registry
        else:
            self.recipe, self.registry = _load_recipe(source, registry)
            self.prune_stage = _prune_stage(self.recipe)
            recipe_mutual = next((s for s in self.recipe.stages if isinstance(s, MutualStage)), None)
        self._mutual_of_recipe = mutual in (None, True) and recipe_mutual is not None
        if mutual is None or mutual is True:
            mutual = recipe_mutual or (MutualStage() if mutual else None)
        #: Phase 2's stage (its warm-up, KD weight and teacher settings), or None without Phase 2;
        #: the recipe's lengths in steps or shares are resolved once the epoch length is known
        self.mutual: MutualStage | None = mutual if isinstance(mutual, MutualStage) else None
        self._mutual_given = self.mutual
        self.compression: Compression | None = None  # set by attach
        self.schedule: Schedule | None = None  # the recipe's stages on the trainer's epochs
        self.teacher: SelfTeacher | None = None
        self.mutual_epoch: int | None = None
        self.teacher_calls = 0
        self.done_at_epoch: int | None = None  # the epoch of the last pruning round
        self.base_groups: int | None = None  # the optimizer's param groups before the core's own
        self._unlinked = False  # pruned while no optimizer was at hand
        self.watch: LoadWatch | None = None
        self.saved: dict[str, Any] | None = None  # a checkpoint's callback state, until training starts
        self.restored = False

    # --- building ---------------------------------------------------------------------------
    def attach(self, root: nn.Module) -> Compression:
        """Attach the masks and pending quantizers to ``root`` (or its ``module`` submodule)."""
        comp = self.given
        if comp is not None:
            if not any(m is comp.model for m in root.modules()):
                raise ConfigError(f"{self.owner}: the Compression's model is not part of the trained model")
        else:
            assert self.recipe is not None
            stage, d = self.prune_stage, self.mutual.distillation if self.mutual is not None else None
            assert stage is not None
            comp = Compression(
                _submodule(root, self.module), targets=self.recipe.targets,
                importance=(stage.importance.name, dict(stage.importance.options)),
                schedule=(stage.scheduler.name, dict(stage.scheduler.options)),
                quantizer=stage.quantizer, scope=stage.scope, min_density=stage.min_density, keep_rows=stage.keep_rows,
                prune_every=self.prune_every or 1, registry=self.registry,
                distillation=(d.name, dict(d.options)) if d is not None else "hinton",
                task=(self.recipe.task.name, dict(self.recipe.task.options)),
            )
        comp.attach()
        self.compression = comp
        return comp

    def set_steps_per_epoch(self, steps: float | None, trainer_epochs: float | None) -> None:
        """Once the trainer knows its epoch length: lay a recipe's stages (without an explicit
        ``prune_every``) on epochs of ``steps`` optimizer steps, as ``squeezer run`` does; warn
        when the trainer stops before they end."""
        comp = self.compression
        if self.prune_every is not None or self.recipe is None or comp is None:
            return
        if steps is None or not 1 <= steps < float("inf"):
            raise ConfigError("prune_every: the number of steps per epoch is unknown (a data loader without "
                              "len()); pass prune_every= to the callback")
        recipe, rounds = self.recipe, len(comp.schedule)
        if needs_resolution(recipe):  # lengths in steps or shares of a budget: whole epochs, as squeezer run
            prune = {i: rounds for i, s in enumerate(recipe.stages) if isinstance(s, PruneStage)}
            recipe = resolve_budget(recipe, int(steps), prune).recipe
            if self._mutual_of_recipe:
                self.mutual = next(s for s in recipe.stages if isinstance(s, MutualStage))
        self.schedule = Schedule.of(recipe, rounds)
        comp.prune_start, comp.prune_every = self.schedule.prune_steps(int(steps))
        self.schedule.check_fits(trainer_epochs, self.owner)

    # --- training ---------------------------------------------------------------------------
    def begin(self, optimizer: Any, schedulers: Iterable[Any] = (), epoch: int = 0) -> None:
        """Before the first step of ``epoch``: the rounds already due (a recipe whose prune stage
        comes first prunes before training)."""
        if self.compression is not None:
            self._prune(self.compression.prune_due, optimizer, schedulers, epoch - 1)

    def step(self, optimizer: Any, schedulers: Iterable[Any] = (), epoch: int = 0) -> None:
        """Count one optimizer step and run the round now due."""
        if self.compression is not None:
            self._prune(self.compression.step, optimizer, schedulers, epoch)

    def _prune(self, advance: Callable[[torch.optim.Optimizer | None], object], optimizer: Any,
               schedulers: Iterable[Any], epoch: int) -> None:
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
        assert self.compression is not None
        if pruned and self.compression.done and self.done_at_epoch is None:
            self.done_at_epoch = epoch

    def _seen(self, optimizer: Any) -> torch.optim.Optimizer | None:
        opt = unwrap_optimizer(optimizer)
        if opt is not None and self.base_groups is None:
            self.base_groups = len(opt.param_groups)
        return opt

    def link(self, optimizer: Any, schedulers: Iterable[Any] = ()) -> None:
        """What the first round asks of the optimizer (:meth:`Compression.link_optimizer`), with
        the LR schedulers extended to the groups it moved or added; a resumed run calls it again."""
        opt = self._seen(optimizer)
        assert opt is not None and self.compression is not None
        known = len(opt.param_groups)
        self.compression.link_optimizer(opt)
        cover_new_groups(opt, list(schedulers), known)

    def start_mutual_if_due(self, epoch: int, optimizer: Any, schedulers: Iterable[Any]) -> None:
        """Start Phase 2 at the recipe's mutual epoch, or else at the first epoch after the last
        pruning round."""
        if self.mutual is None or self.teacher is not None or self.done_at_epoch is None:
            return
        due = self.schedule.mutual_epoch if self.schedule is not None else None
        if epoch >= (self.done_at_epoch + 1 if due is None else due):
            self._start_mutual(optimizer, schedulers)
            self.mutual_epoch = epoch

    def _start_mutual(self, optimizer: Any, schedulers: Iterable[Any]) -> None:
        """Phase 2: the self-teacher, its parameters in a new group of ``optimizer``, no weight
        decay on the shared storage."""
        opt = unwrap_optimizer(optimizer)
        if opt is None:
            raise ConfigError(f"{self.owner}: Phase 2 needs the trainer's optimizer, and none was found")
        assert self.mutual is not None and self.compression is not None
        self.link(opt, schedulers)
        known = len(opt.param_groups)
        teacher = self.compression.self_teacher(opt, owns=self.mutual.teacher_owns,
                                                quantized=self.mutual.teacher_quantized)
        if _distributed():  # DDP does not know the teacher's copies
            for p in teacher.parameters():
                if p.requires_grad:
                    p.register_post_accumulate_grad_hook(_average_gradient)
        cover_new_groups(opt, list(schedulers), known)
        teacher.register_forward_pre_hook(self._count_teacher_call)
        self.teacher = teacher

    def _count_teacher_call(self, *_: Any) -> None:
        self.teacher_calls += 1

    def kd_weight(self, epoch: int | None) -> float:
        """The distillation weight in ``epoch``: 0 before Phase 2 and during its warm-up."""
        if self.mutual is None or self.mutual_epoch is None or epoch is None:
            return 0.0
        return kd_weight(self.mutual, epoch - self.mutual_epoch)

    def check_teacher_called(self, where: str) -> None:
        """At an epoch's end: warn when Phase 2 is on but the user's code never ran the teacher."""
        if self.teacher is not None and self.teacher_calls == 0:
            warnings.warn(f"{self.owner}: Phase 2 is on but {where} never called callback.teacher, so the "
                          "teacher's weights are not trained", stacklevel=2)
        self.teacher_calls = 0

    def export_at_end(self, is_main: bool) -> None:
        """When training ends: warn if rounds are missing, then write the artifact (main process)."""
        comp = self.compression
        if comp is None or self.export_path is None:
            return
        if not comp.done:
            warnings.warn(f"{self.owner}: training ended after {comp.rounds_done} of {len(comp.schedule)} "
                          "pruning rounds; the artifact is less sparse than scheduled", stacklevel=2)
        if is_main:
            was_training = comp.model.training
            comp.model.eval()
            comp.export(self.export_path, info=self.export_info or None)
            comp.model.train(was_training)

    # --- saving -----------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        comp = self.compression
        assert comp is not None
        settings: dict[str, Any] = {
            "module": self.module,
            "targets": attrs.asdict(comp.targets),
            "importance": {"name": comp.importance_name, "options": _options(comp.importance)},
            "schedule": list(comp.schedule),
            "quantizer": attrs.asdict(comp.quantizer) if comp.quantizer is not None else None,
            "distillation": {"name": comp.distillation_name, "options": _options(comp.distillation)},
            "task": {"name": comp.task.name, "options": _options(comp.task.task)},
            "scope": comp.scope,
            "min_density": comp.min_density,
            "keep_rows": comp.keep_rows,
            "mutual": attrs.asdict(self._mutual_given) if self._mutual_given is not None else None,
        }
        if self.recipe is not None and self.prune_every is None and needs_resolution(self.recipe):
            # the lengths as written; where they fall in steps is compared once known (check_timing)
            settings["stages"] = {"lengths": recipe_to_dict(self.recipe)["stages"],
                                  "budget": attrs.asdict(self.recipe.budget) if self.recipe.budget else None}
        elif self.recipe is not None and self.prune_every is None:
            s = Schedule.of(self.recipe, len(comp.schedule))
            settings["stages"] = {"prune_epoch": s.prune_epoch, "epochs_per_round": s.epochs_per_round,
                                  "mutual_epoch": s.mutual_epoch}
        out: dict[str, Any] = _json(settings)
        return out

    def state(self, optimizer: Any) -> dict[str, Any]:
        """The callback's part of a checkpoint: JSON-able values, and the teacher's tensors."""
        comp = self.compression
        if comp is None:
            return {}
        opt = unwrap_optimizer(optimizer)
        teacher = None if self.teacher is None else {
            k: v.detach().clone() for k, v in self.teacher.state_dict().items()}
        return {
            "version": VERSION, "settings": self._settings(), "spec": _json(compress.spec(comp.model)),
            "steps": comp.steps, "rounds_done": comp.rounds_done,
            "prune_start": comp.prune_start, "prune_every": comp.prune_every,
            "done_at_epoch": self.done_at_epoch, "base_groups": self.base_groups,
            "param_groups": len(opt.param_groups) if opt is not None else None,
            "mutual_epoch": self.mutual_epoch, "teacher_calls": self.teacher_calls, "teacher": teacher,
        }

    # --- restoring --------------------------------------------------------------------------
    def watch_loads(self, on_load: Callable[[], None] | None = None) -> None:
        """From now until training starts, a loaded checkpoint may be resumed from."""
        assert self.compression is not None
        self.unwatch()
        self.saved, self.restored = None, False
        self.watch = LoadWatch(self.compression.model, self.owner, on_load)

    def unwatch(self) -> None:
        if self.watch is not None:
            self.watch.remove()
            self.watch = None

    @property
    def resuming(self) -> bool:
        """Between attaching the masks and the start of training (where a checkpoint may load)."""
        return self.watch is not None

    @property
    def loaded_unrestored(self) -> bool:
        """A checkpoint's model state was loaded but no callback state restored."""
        return self.watch is not None and self.watch.loaded and not self.restored

    def fail(self, why: str) -> ConfigError:
        return ConfigError(f"{self.owner}: cannot resume: {why}")

    def check_saved(self, state: dict[str, Any]) -> None:
        """Refuse a callback state of another version, or written with other settings."""
        if state.get("version") != VERSION:
            raise self.fail(f"the checkpoint's callback state has version {state.get('version')!r}, this "
                            f"squeezer reads version {VERSION}")
        diffs = _differences(state.get("settings"), self._settings())
        if diffs:
            raise self.fail("the checkpoint was written with other settings: " + "; ".join(diffs))

    def restore(self, state: dict[str, Any], optimizer: Any, schedulers: Iterable[Any]) -> None:
        """Redo the first run's structure and counters on the fresh model and optimizer, before the
        trainer loads the optimizer's state."""
        comp = self.compression
        assert comp is not None
        self.check_saved(state)
        opt = unwrap_optimizer(optimizer)
        if opt is None:
            raise self.fail("the trainer's optimizer was not found")
        weights = dict(compressed_weights(comp.model))
        saved_weights = list(state["spec"]["weights"])
        if list(weights) != saved_weights:
            a, b = next((a, b) for a, b in zip([*saved_weights, None], [*weights, None], strict=False) if a != b)
            raise self.fail(f"the checkpoint compressed {len(saved_weights)} weights, the model has "
                            f"{len(weights)} (checkpoint {a!r}, model {b!r})")
        if any(p.quantizer is not None for p in weights.values()):
            raise self.fail("the model's quantizers are already on; resume into a freshly built model")
        base = state["base_groups"]
        if base is not None and len(opt.param_groups) != base:
            raise self.fail(f"the trainer's optimizer has {len(opt.param_groups)} param groups, the checkpoint's "
                            f"had {base} before the callback added its own")
        for path, entry in state["spec"]["quantizers"].items():  # their values are already loaded
            p = weights[path]
            if p.fake_quantizer is None or _json(p.quantizer_spec) != entry:
                raise self.fail(f"the checkpoint's quantizer for {path} ({_show(entry)}) is not the one the "
                                f"callback attached ({_show(_json(p.quantizer_spec))})")
            p.quantizer_on = True
        comp.steps, comp.rounds_done = int(state["steps"]), int(state["rounds_done"])
        self.done_at_epoch = state["done_at_epoch"]
        if comp.rounds_done:  # the param groups the first run moved or added, in its order
            self.link(opt, schedulers)
        self.mutual_epoch, self.teacher_calls = state["mutual_epoch"], int(state["teacher_calls"])
        if (self.mutual_epoch is None) != (state["teacher"] is None) or (
                self.mutual_epoch is not None and self.mutual is None):
            raise self.fail("the checkpoint's Phase 2 state does not match the callback's")
        if self.mutual_epoch is not None:
            self._start_mutual(opt, schedulers)
            assert self.teacher is not None
            self.teacher.load_state_dict(state["teacher"])
        if state["param_groups"] is not None and len(opt.param_groups) != state["param_groups"]:
            raise self.fail(f"the optimizer has {len(opt.param_groups)} param groups after restoring, the "
                            f"checkpoint's has {state['param_groups']}")
        self.saved, self.restored = state, True

    def check_timing(self) -> None:
        """Once the steps per epoch are known: the rounds fall on the checkpoint's run's steps."""
        saved, comp = self.saved, self.compression
        self.saved = None
        if saved is None or comp is None:
            return
        diffs = [f"{field} (checkpoint {saved[field]}, now {getattr(comp, field)})"
                 for field in ("prune_start", "prune_every") if saved[field] != getattr(comp, field)]
        if diffs:
            raise self.fail("the pruning rounds fall on other optimizer steps: " + "; ".join(diffs)
                            + " (did the batches per epoch or the gradient accumulation change?)")


class CoreCallback:
    """The public face both callbacks share over their :class:`Core` (``_core``)."""

    _core: Core

    def _epoch_now(self) -> int | None:
        raise NotImplementedError

    @property
    def compression(self) -> Compression:
        """The :class:`Compression` driven by the callback (built from a recipe when training starts)."""
        comp = self._core.compression or self._core.given
        if comp is None:
            raise ConfigError(f"{self._core.owner}: the Compression is built from the recipe when the trainer "
                              "starts (Trainer.fit, or the Trainer's creation)")
        return comp

    @property
    def teacher(self) -> SelfTeacher | None:
        """The self-teacher during Phase 2, else ``None``; call it like the model."""
        return self._core.teacher

    @property
    def mutual(self) -> MutualStage | None:
        """Phase 2's settings, or ``None`` without Phase 2."""
        return self._core.mutual

    @property
    def kd_weight(self) -> float:
        """The distillation weight now: 0 during the first ``warmup_epochs`` of Phase 2."""
        return self._core.kd_weight(self._epoch_now())

    def mutual_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
        """Phase 2's loss of a batch (:meth:`Compression.mutual_loss` with :attr:`kd_weight`)."""
        mutual = self._core.mutual
        return self.compression.mutual_loss(student_logits, teacher_logits, targets, kd_weight=self.kd_weight,
                                            student_distills=mutual.student_distills if mutual else "always")
