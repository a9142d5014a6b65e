"""Resuming a run from the trainer's own checkpoint, for both callbacks.

A trainer's checkpoint holds the model's ``state_dict`` (masks, stored weights, the quantizers'
parameters) and the optimizer's and schedulers' states. What it lacks, the callback saves as its
own state (:meth:`Resumable._resume_state`): the settings it ran with, the Compression's counters,
the compression structure (:func:`squeezer.compress.spec`), the optimizer's number of param
groups, and Phase 2's state (the epoch it started, the self-teacher's private parameters). Which
param groups the callback moved or added follows from the counters, so it is not stored.

A resumed run (a fresh model, callback and trainer) gets everything back in this order:

1. the masks and the (pending) quantizers are attached before the trainer builds its optimizer,
   as in the first run, so the trainer loads the model's ``state_dict`` as it saved it
   (:class:`LoadWatch` refuses one without the masks);
2. once the optimizer exists and before it loads its state (:meth:`Resumable._restore`): the
   settings are compared, the quantizers the first run had switched on are switched on again
   (their values are the loaded ones), the counters restored, and the param groups the first
   run moved or added are again (the first round takes the stored weights and quantizer
   parameters out of weight decay; Phase 2 adds the teacher's copies, whose values are loaded),
   with the LR schedulers extended to cover them.

Nothing here imports a trainer library.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from torch import nn

from squeezer import compress
from squeezer.compress.weight import CompressedWeight, compressed_weights
from squeezer.engine.schedule import Schedule
from squeezer.errors import ConfigError
from squeezer.integrations._driver import MutualPhase, unwrap_optimizer

#: the version of the callback state; a checkpoint with another one is refused
VERSION = 2
_UNSET = object()


def _json(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), so saved and current settings compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=_plain))


def _plain(value: Any) -> Any:
    """A JSON stand-in for a value JSON lacks, the same in every process (no memory addresses)."""
    if isinstance(value, set | frozenset):
        return sorted(map(str, value))
    text = str(value)
    return f"<{type(value).__qualname__}>" if " at 0x" in text else text


def _options(strategy: Any) -> dict[str, Any]:
    cls = type(strategy)
    return {a.name: getattr(strategy, a.name) for a in attrs.fields(cls) if a.init} if attrs.has(cls) else {}


def _show(value: Any) -> str:
    text = "unset" if value is _UNSET else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _differences(saved: Any, now: Any, key: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[str] = []
        for k in [*now, *(k for k in saved if k not in now)]:
            out += _differences(saved.get(k, _UNSET), now.get(k, _UNSET), f"{key}.{k}" if key else k)
        return out
    return [] if saved == now else [f"{key} (checkpoint {_show(saved)}, now {_show(now)})"]


def _register_load_pre_hook(model: nn.Module, hook: Callable[..., None]) -> Any:
    register = getattr(model, "register_load_state_dict_pre_hook", None)  # public from torch 2.5
    if register is not None:
        return register(hook)
    return model._register_load_state_dict_pre_hook(hook, with_module=True)


class LoadWatch:
    """A ``load_state_dict`` pre-hook on the compressed model while a run may be resuming.

    It refuses a ``state_dict`` without the masks (one written without the callback), which a
    non-strict load would otherwise skip silently. ``on_load`` runs when one is loaded.
    """

    def __init__(self, model: nn.Module, owner: str, on_load: Callable[[], None] | None = None) -> None:
        self.model, self.owner, self.on_load = model, owner, on_load
        self.loaded = False
        self._handle = _register_load_pre_hook(model, self._hook)

    def remove(self) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        weights = [name for name, m in self.model.named_modules() if isinstance(m, CompressedWeight)]
        if not weights:
            return
        missing = next((prefix + n + ".mask" for n in weights if prefix + n + ".mask" not in state_dict), None)
        if missing is not None:
            raise ConfigError(f"{self.owner}: the state_dict being loaded has no {missing!r}: resume from a "
                              "checkpoint written by a run with this callback (the same targets)")
        if self.on_load is not None:
            self.on_load()
        self.loaded = True


class Resumable(MutualPhase):
    """The callbacks' side of resuming (see the module docstring); the trainer-specific parts
    (which hook saves, which restores) are the callbacks'."""

    _owner: str

    def _init_phase(self) -> None:
        super()._init_phase()
        self._stash: LoadWatch | None = None
        self._saved: dict[str, Any] | None = None  # the checkpoint's callback state, until training starts
        self._restored = False

    # --- saving ---------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        assert self._driver is not None
        comp, plan = self._driver.compression, self._plan
        settings: dict[str, Any] = {
            "module": self.module,
            "targets": attrs.asdict(comp.targets),
            "importance": {"name": comp.importance_name, "options": _options(comp.importance)},
            "schedule": list(comp.schedule),
            "quantizer": attrs.asdict(comp.quantizer) if comp.quantizer is not None else None,
            "distillation": {"name": comp.distillation_name, "options": _options(comp.distillation)},
            "scope": comp.scope,
            "min_density": comp.min_density,
            "mutual": attrs.asdict(plan.mutual) if plan.mutual is not None else None,
        }
        if plan.recipe is not None and plan.prune_every is None:
            timeline = Schedule.of(plan.recipe, len(comp.schedule))
            settings["stages"] = {"prune_epoch": timeline.prune_epoch, "epochs_per_round": timeline.epochs_per_round,
                                  "mutual_epoch": timeline.mutual_epoch}
        out: dict[str, Any] = _json(settings)
        return out

    def _resume_state(self, optimizer: Any) -> dict[str, Any]:
        """The callback's part of a checkpoint: JSON-able values, and the teacher's tensors."""
        driver = self._driver
        if driver is None:
            return {}
        comp = driver.compression
        opt = unwrap_optimizer(optimizer)
        teacher = None
        if self.teacher is not None:
            teacher = {k: v.detach().clone() for k, v in self.teacher.state_dict().items()}
        return {
            "version": VERSION,
            "settings": self._settings(),
            "spec": _json(compress.spec(comp.model)),
            "steps": comp.steps,
            "rounds_done": comp.rounds_done,
            "prune_start": comp.prune_start,
            "prune_every": comp.prune_every,
            "done_at_epoch": driver.done_at_epoch,
            "base_groups": driver.base_groups,
            "param_groups": len(opt.param_groups) if opt is not None else None,
            "mutual_epoch": self._mutual_epoch,
            "teacher_calls": self._teacher_calls,
            "teacher": teacher,
        }

    # --- restoring ------------------------------------------------------------------------
    def _watch_loads(self, on_load: Callable[[], None] | None = None) -> None:
        """From now until training starts, a loaded checkpoint may be resumed from."""
        assert self._driver is not None
        self._unwatch()
        self._saved, self._restored = None, False
        self._stash = LoadWatch(self._driver.compression.model, self._owner, on_load)

    def _unwatch(self) -> None:
        if self._stash is not None:
            self._stash.remove()
            self._stash = None

    @property
    def _resuming(self) -> bool:
        """Between attaching the masks and the start of training (where a checkpoint may load)."""
        return self._stash is not None

    def _check_saved(self, state: dict[str, Any]) -> None:
        """Refuse a callback state of another version, or written with other settings."""
        if state.get("version") != VERSION:
            raise ConfigError(f"{self._owner}: cannot resume: the checkpoint's callback state has version "
                              f"{state.get('version')!r}, this squeezer reads version {VERSION}")
        diffs = _differences(state.get("settings"), self._settings())
        if diffs:
            raise ConfigError(f"{self._owner}: cannot resume: the checkpoint was written with other settings: "
                              + "; ".join(diffs))

    def _fail(self, why: str) -> ConfigError:
        return ConfigError(f"{self._owner}: cannot resume: {why}")

    def _restore(self, state: dict[str, Any], optimizer: Any, schedulers: Iterable[Any]) -> None:
        """Rebuild the first run's structure and the callback's state on the fresh model and
        optimizer, before the trainer loads the optimizer's state (see the module docstring)."""
        driver = self._driver
        assert driver is not None
        self._check_saved(state)
        comp = driver.compression
        model = comp.model
        opt = unwrap_optimizer(optimizer)
        if opt is None:
            raise self._fail("the trainer's optimizer was not found")
        weights = [path for path, _ in compressed_weights(model)]
        saved_weights = list(state["spec"]["weights"])
        if weights != saved_weights:
            first = next((a, b) for a, b in zip([*saved_weights, None], [*weights, None], strict=False) if a != b)
            raise self._fail(f"the checkpoint compressed {len(saved_weights)} weights, the model has {len(weights)} "
                             f"(checkpoint {first[0]!r}, model {first[1]!r})")
        if any(p.quantizer is not None for _, p in compressed_weights(model)):
            raise self._fail("the model's quantizers are already on; resume into a freshly built model")
        base = state["base_groups"]
        if base is not None and len(opt.param_groups) != base:
            raise self._fail(f"the trainer's optimizer has {len(opt.param_groups)} param groups, the checkpoint's "
                             f"had {base} before the callback added its own")
        self._switch_on(model, state["spec"]["quantizers"])
        comp.steps, comp.rounds_done = int(state["steps"]), int(state["rounds_done"])
        driver.done_at_epoch = state["done_at_epoch"]
        # the param groups the first run moved or added, in its order, from the counters
        if comp.rounds_done:
            driver.link(opt, schedulers)
        self._mutual_epoch, self._teacher_calls = state["mutual_epoch"], int(state["teacher_calls"])
        if (self._mutual_epoch is None) != (state["teacher"] is None) or (
                self._mutual_epoch is not None and self._plan.mutual is None):
            raise self._fail("the checkpoint's Phase 2 state does not match the callback's")
        if self._mutual_epoch is not None and self._plan.mutual is not None:
            self.teacher = driver.start_mutual(self._plan.mutual, opt, schedulers)
            self.teacher.register_forward_pre_hook(self._count_teacher_call)
            self.teacher.load_state_dict(state["teacher"])
        if state["param_groups"] is not None and len(opt.param_groups) != state["param_groups"]:
            raise self._fail(f"the optimizer has {len(opt.param_groups)} param groups after restoring, the "
                             f"checkpoint's has {state['param_groups']}")
        self._saved, self._restored = state, True

    def _switch_on(self, model: nn.Module, quantizers: dict[str, Any]) -> None:
        """Switch on the quantizers the checkpoint's run had on; their values are already loaded."""
        weights = dict(compressed_weights(model))
        for path, entry in quantizers.items():
            p = weights[path]
            if p.fake_quantizer is None or _json(p.quantizer_spec) != entry:
                raise self._fail(f"the checkpoint's quantizer for {path} ({_show(entry)}) is not the one the "
                                 f"callback attached ({_show(_json(p.quantizer_spec))})")
            p.quantizer_on = True

    def _check_timing(self) -> None:
        """Once the steps per epoch are known: the rounds fall on the checkpoint's run's steps."""
        saved = self._saved
        if saved is None or self._driver is None:
            return
        comp = self._driver.compression
        diffs = [f"{field} (checkpoint {saved[field]}, now {getattr(comp, field)})"
                 for field in ("prune_start", "prune_every") if saved[field] != getattr(comp, field)]
        self._saved = None
        if diffs:
            raise self._fail("the pruning rounds fall on other optimizer steps: " + "; ".join(diffs)
                             + " (did the batches per epoch or the gradient accumulation change?)")
