"""Reading recipes: TOML -> frozen configs, with errors that name the file and field path."""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from squeezer import contracts
from squeezer.errors import ConfigError
from squeezer.recipe.budget import OPTIONAL_FIELDS, check_budget, check_one_unit, superseded
from squeezer.recipe.configs import (
    DEFAULT_TASK,
    RECIPE_VERSION,
    STAGE_TYPES,
    DistillStage,
    Factory,
    Optim,
    PruneStage,
    QuantizeStage,
    Recipe,
    Stage,
    Strategy,
    plugin_fields,
)
from squeezer.registry import Registry

_OPTIM_KEYS = {a.name for a in attrs.fields(Optim)}
#: fields a resolved recipe leaves out when unset, so a recipe without them records as before they existed
_OMITTED_WHEN_NONE = {*OPTIONAL_FIELDS, "activations"}
_FIELD_MESSAGE = re.compile(r"^'(\w+)' (.*)$", re.S)


#: A recipe file larger than this is refused unread (the bundled ones are about 2 KB).
MAX_RECIPE_BYTES = 1 << 20
#: The largest seed: torch seeds are 64-bit and the per-epoch seeds are derived modulo 2**63.
MAX_SEED = 2**63 - 1


def load_recipe(path: str | Path, registry: Registry | None = None) -> Recipe:
    """Read and validate a recipe file; with a registry, plugin names and options are checked too.

    Only a regular file of at most :data:`MAX_RECIPE_BYTES` is read: a FIFO, a device such as
    ``/dev/zero`` or a directory is refused at once, without blocking or reading it.
    """
    from squeezer.safefile import read_text

    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"{path}: recipe file not found")
    text = read_text(path, MAX_RECIPE_BYTES, "recipe", ConfigError)
    return parse_recipe(text, source=str(path), registry=registry)


def parse_recipe(text: str, *, source: str = "<recipe>", registry: Registry | None = None) -> Recipe:
    """Validate recipe TOML text (see :func:`load_recipe`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nesting level
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply") from None
    recipe = recipe_from_dict(data, source=source)
    check_stage_order(recipe)
    if registry is not None:
        check_strategies(recipe, registry)
    return recipe


def recipe_from_dict(data: Mapping[str, Any], *, source: str = "<recipe>") -> Recipe:
    """Build a :class:`Recipe` from plain data (as TOML gives it)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a recipe must be a table")
    data = dict(data)
    version = data.get("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise ConfigError(f"{source}: version: the recipe has format version {_short(version)}, this squeezer "
                          f"reads version {RECIPE_VERSION}")
    for section in ("model", "data"):
        if section in data and isinstance(data[section], Mapping):
            data[section] = _factory_table(data[section], section, source)
    stages = data.get("stages")
    if "stages" in data:
        if not isinstance(stages, list):
            raise ConfigError(f"{source}: stages: must be an array of tables ([[stages]]), got {_kind(stages)}")
        training = data.get("training", {})
        training = dict(training) if isinstance(training, Mapping) else {}
        data["stages"] = tuple(_stage(s, f"stages[{i}]", source, training) for i, s in enumerate(stages))
    recipe = typing.cast(Recipe, _build(Recipe, data, "", source, extra={"source": source}))
    check_seed(recipe.seed, f"{source}: seed")
    check_budget(recipe)
    return recipe


def check_seed(seed: Any, where: str) -> int:
    """A seed is an integer in 0..:data:`MAX_SEED`; anything else names ``where``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{where}: must be an integer in 0..{MAX_SEED} (2**63 - 1), got {_short(seed)}")
    return seed


def check_stage_order(recipe: Recipe) -> None:
    """Refuse stages that would be silently ignored: quantizers are attached once, so a second
    quantizer (a ``quantize`` stage, or a ``prune`` stage's ``quantizer``) after the weights are
    quantized would do nothing. A ``distill`` stage starts a fresh student, which may be quantized again."""
    quantized_by: str | None = None
    activations_by: str | None = None
    for i, stage in enumerate(recipe.stages):
        if isinstance(stage, PruneStage | QuantizeStage) and stage.activations is not None:
            if activations_by is not None:
                raise ConfigError(
                    f"{recipe.source}: stages[{i}].activations: the layers' inputs are already quantized by "
                    f"{activations_by}; quantize activations once (per-layer bits go in activations.overrides)"
                )
            activations_by = f"stages[{i}] ({_short(stage.label)})"
        if isinstance(stage, DistillStage):
            quantized_by = activations_by = None
        elif isinstance(stage, PruneStage | QuantizeStage) and stage.quantizer is not None:
            if quantized_by is not None:
                raise ConfigError(
                    f"{recipe.source}: stages[{i}].quantizer: the weights are already quantized by "
                    f"{quantized_by}, so this quantizer would be ignored; quantize once (per-layer bits go in "
                    f"quantizer.overrides), or put a distill stage in between to quantize a fresh student"
                )
            quantized_by = f"stages[{i}] ({_short(stage.label)}, quantizer {_short(stage.quantizer.name)})"


def validator_message(exc: BaseException) -> str:
    """The readable part of an attrs validator error (its args also hold the Attribute object)."""
    first = exc.args[0] if exc.args else ""
    return first if isinstance(first, str) else str(exc)


def _options(table: dict[str, Any], path: str, source: str) -> dict[str, Any]:
    """Pop ``options`` from a table: absent or a table (anything else names the field)."""
    options = table.pop("options", None)
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{source}: {path}.options: must be a table, got {_kind(options)}")
    return dict(options)


def _factory_table(table: Mapping[str, Any], path: str, source: str) -> dict[str, Any]:
    """``[model]`` keys other than ``factory``/``options`` are the factory's keyword arguments."""
    table = dict(table)
    options = _options(table, path, source)
    factory = table.pop("factory", None)
    options.update(table)
    out: dict[str, Any] = {"options": options}
    if factory is not None:
        out["factory"] = factory
    return out


def _stage(raw: Any, path: str, source: str, training: Mapping[str, Any]) -> Stage:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {path}: must be a table, got {_kind(raw)}")
    raw = dict(raw)
    kind = raw.pop("type", None)
    if not isinstance(kind, str) or kind not in STAGE_TYPES:
        valid = ", ".join(STAGE_TYPES)
        close = difflib.get_close_matches(str(kind), list(STAGE_TYPES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        what = "missing 'type'" if kind is None else f"unknown stage type {_short(kind)}{hint}"
        raise ConfigError(f"{source}: {path}.type: {what} (valid: {valid})")
    optim = {k: raw.pop(k) for k in list(raw) if k in _OPTIM_KEYS}
    if optim:  # a stage's optimizer settings override [training], field by field
        raw["optim"] = {**training, **optim}
    check_one_unit(STAGE_TYPES[kind], raw, f"{source}: {path}")
    return typing.cast(Stage, _build(STAGE_TYPES[kind], raw, path, source))


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a float"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a value in a message may be arbitrarily large)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _join(path: str, name: str) -> str:
    if not re.fullmatch(r"[\w-]+", name, re.ASCII):  # a key with spaces, newlines or symbols: quote it
        name = _short(name)
    return f"{path}.{name}" if path else name


def _build(cls: type, raw: Any, path: str, source: str, extra: Mapping[str, Any] | None = None) -> Any:
    where = path or "recipe"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where}: must be a table, got {_kind(raw)}")
    fields = {a.name: a for a in attrs.fields(cls) if a.init and a.name != "source"}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in raw if k not in fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{source}: {_join(path, unknown[0])}: unknown field{hint} (valid: {', '.join(fields)})"
        )
    kwargs = {name: _convert(hints[name], value, _join(path, name), source) for name, value in raw.items()}
    missing = [n for n, a in fields.items() if a.default is attrs.NOTHING and n not in kwargs]
    if missing:
        raise ConfigError(f"{source}: {_join(path, missing[0])}: required field is missing")
    try:
        return cls(**kwargs, **(extra or {}))
    except (ValueError, TypeError) as exc:
        message = validator_message(exc)
        match = _FIELD_MESSAGE.match(message)
        if match:
            raise ConfigError(f"{source}: {_join(path, match.group(1))}: {match.group(2)}") from None
        raise ConfigError(f"{source}: {where}: {message}") from None


def _check_finite(value: Any, path: str, source: str) -> None:
    """Refuse TOML's inf and nan anywhere in an options table (a factory's or a plugin's): no
    option means them, and a NaN width or learning rate fails far from the recipe line."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {path}: must be a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, _join(path, str(key)), source)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]", source)


def _convert(hint: Any, value: Any, path: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return None if value is None else _convert(inner[0], value, path, source)
    if hint is Any:
        return value
    if isinstance(hint, type) and attrs.has(hint):
        if hint.__name__ in ("Strategy", "QuantizerChoice"):
            value = _strategy_table(value, path, source)
        if hint.__name__ == "Activations" and isinstance(value, int) and not isinstance(value, bool):
            value = {"bits": value}  # activations = 8
        return _build(hint, value, path, source)
    if origin is tuple:
        if isinstance(value, str) and args[0] is str:
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {path}: must be an array, got {_kind(value)}")
        if args and args[0] is Stage:
            return tuple(value)
        return tuple(_convert(args[0], v, f"{path}[{i}]", source) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {path}: must be a table, got {_kind(value)}")
        _check_finite(value, path, source)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {path}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {path}: must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {path}: must be a number, got {value!r}")
        _check_finite(value, path, source)
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond float's range
            raise ConfigError(f"{source}: {path}: must be a finite number, got an integer of "
                              f"{len(str(abs(value)))} digits") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {path}: must be a string, got {value!r}")
        return value
    return value


def _strategy_table(value: Any, path: str, source: str) -> dict[str, Any]:
    """``"l1"`` or ``{name = "lsq", bits = 2, overrides = [...]}`` -> name + options (+ overrides)."""
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {path}: must be a name or a table with 'name', got {_kind(value)}")
    table = dict(value)
    out: dict[str, Any] = {"options": _options(table, path, source)}
    for key in ("name", "overrides"):
        if key in table:
            out[key] = table.pop(key)
    if "overrides" in out and isinstance(out["overrides"], list):
        out["overrides"] = [_override_table(o, f"{path}.overrides[{i}]", source)
                            for i, o in enumerate(out["overrides"])]
    out["options"].update(table)
    return out


def _override_table(value: Any, path: str, source: str) -> Any:
    if not isinstance(value, Mapping):
        return value
    table = dict(value)
    out = {k: table.pop(k) for k in ("pattern", "skip") if k in table}
    out["options"] = {**_options(table, path, source), **table}
    return out


def check_strategies(recipe: Recipe, registry: Registry) -> None:
    """Check every plugin name and option of ``recipe`` against ``registry`` (builds each once),
    and that no stage would be silently ignored (:func:`check_stage_order`)."""
    check_stage_order(recipe)
    src = recipe.source
    for field, extension, choice in plugin_fields(recipe):
        check_strategy(registry, extension, choice, f"{src}: {field}")
    for i, stage in enumerate(recipe.stages):
        for field, extension, choice in plugin_fields(stage):
            check_strategy(registry, extension, choice, f"{src}: stages[{i}].{field}")


def check_strategy(registry: Registry, extension: str, choice: Any, where: str) -> Any:
    """Build the strategy ``choice`` names (a ``Strategy`` or ``QuantizerChoice``) once, with each
    per-layer override's options too, and check a scheduler's contract; returns the strategy."""
    strategy = registry.create(extension, choice.name, choice.options, where=where)
    if extension == "scheduler":
        _check_schedule(strategy, f"{where} ({choice.name})")
    for j, o in enumerate(getattr(choice, "overrides", ())):  # a quantizer's per-layer options
        if not o.skip:
            registry.create(extension, choice.name, {**choice.options, **o.options}, where=f"{where}.overrides[{j}]")
    return strategy


def _check_schedule(scheduler: Any, where: str) -> list[float]:
    """The scheduler's contract (:func:`squeezer.contracts.schedule`), checked in the core."""
    from squeezer.errors import PluginError
    from squeezer.registry import PluginBoundary

    with PluginBoundary() as boundary:
        try:
            return contracts.schedule(scheduler.sparsities(), scheduler.target)
        except contracts.ContractViolation as exc:
            raise PluginError(f"{where}: {exc}") from None
        except BaseException as exc:  # a bug in the plugin (sys.exit included), or a value that is not a number
            error = boundary.failure(exc, f"{where}: sparsities() failed")
            if error is None:
                raise
            raise error from exc


def checked_schedule(scheduler: Any, where: str) -> list[float]:
    """Public form of the schedule check used by the pipeline."""
    return _check_schedule(scheduler, where)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe (defaults filled in) as plain data, stage types included.

    Lengths in steps or shares (and ``budget``) appear only where set, and then without the epoch
    field they replace: the data of a recipe in epochs is what it was before they existed, and the
    data reads back into the same recipe."""

    def convert(obj: Any) -> Any:
        if attrs.has(type(obj)):
            left_out = superseded(obj) if isinstance(obj, Stage) else set()
            out = {a.name: convert(getattr(obj, a.name)) for a in attrs.fields(type(obj))
                   if a.name != "source" and a.name not in left_out
                   and not (a.name in _OMITTED_WHEN_NONE and getattr(obj, a.name) is None)}
            if isinstance(obj, Stage):
                out = {"type": obj.TYPE, **out}
            if isinstance(obj, Recipe) and obj.task == Strategy(name=DEFAULT_TASK):
                del out["task"]  # so a recipe without one records (and hashes) as before tasks existed
            return out
        if isinstance(obj, tuple | list):
            return [convert(v) for v in obj]
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        return obj

    return typing.cast(dict[str, Any], convert(recipe))


def with_factories(recipe: Recipe, *, model: str | None = None, data: str | None = None,
                   task: str | None = None) -> Recipe:
    """``recipe`` with its ``[model]`` and/or ``[data]`` factory replaced (options dropped: the new
    factory's own defaults apply) and its ``task`` (by name), as ``squeezer run --model/--data/--task``
    does; a malformed path is a ``ConfigError`` naming the option (an unknown task is refused when the
    recipe's strategies are checked)."""
    def factory(option: str, value: str) -> Factory:
        try:
            return Factory(factory=value)
        except ValueError as exc:
            raise ConfigError(f"{option}: {exc}".replace("'factory' ", "")) from None

    if model is not None:
        recipe = attrs.evolve(recipe, model=factory("--model", model))
    if data is not None:
        recipe = attrs.evolve(recipe, data=factory("--data", data))
    if task is not None:
        recipe = attrs.evolve(recipe, task=Strategy(name=task))
    return recipe

