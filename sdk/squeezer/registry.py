"""The typed registry that plugins fill through the register hooks."""

from __future__ import annotations

import difflib
import re
import signal
import threading
import typing
from collections.abc import Iterator, Mapping
from types import FrameType, TracebackType
from typing import Any

import attrs

from squeezer.errors import ConfigError, PluginError, SqueezerError, UnknownStrategyError

KINDS: tuple[str, ...] = ("importance", "scheduler", "quantizer", "distillation_loss", "task")
KIND_HOOKS: Mapping[str, str] = {
    "importance": "squeezer_register_importances",
    "scheduler": "squeezer_register_schedulers",
    "quantizer": "squeezer_register_quantizers",
    "distillation_loss": "squeezer_register_distillation_losses",
    "task": "squeezer_register_tasks",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginBoundary:
    """``with PluginBoundary() as b: <plugin code>``, then ``b.failure(exc, where)`` in an ``except
    BaseException`` turns whatever plugin code raised into a one-line :class:`PluginError`.

    Plugin code may raise anything: ``sys.exit(0)`` (``SystemExit``) at import or in a hook must
    not end the program as a success having done nothing, nor ``sys.exit(3)`` with no message.
    A ``KeyboardInterrupt`` is the one exception that may be the user's: while the block runs, a
    SIGINT handler that delegates to the previous one records whether a real SIGINT arrived. A
    ``KeyboardInterrupt`` after a real SIGINT (Ctrl-C) is the user's and passes through unchanged
    (``failure`` returns None: re-raise it), so Ctrl-C keeps meaning "interrupt"; one that the
    plugin raised by itself is a plugin bug, reported naming the plugin like any other.
    """

    def __init__(self) -> None:
        self.signalled = False
        self._previous: Any = None
        self._installed = False
        # Off the main thread no signal handler runs, so a KeyboardInterrupt there was raised by code.
        self._can_tell = threading.current_thread() is not threading.main_thread()

    def __enter__(self) -> PluginBoundary:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None:  # None: a handler installed outside Python, which we cannot wrap
                try:
                    signal.signal(signal.SIGINT, self._handler)
                except (ValueError, OSError):
                    return self
                self._previous, self._installed, self._can_tell = previous, True, True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed and signal.getsignal(signal.SIGINT) == self._handler:  # unless the plugin replaced it
            signal.signal(signal.SIGINT, self._previous)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True
        if callable(self._previous):
            self._previous(signum, frame)  # Python's default raises KeyboardInterrupt
        elif self._previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def failure(self, exc: BaseException, where: str,
                keep: type[SqueezerError] = SqueezerError) -> PluginError | None:
        """The :class:`PluginError` to raise for ``exc`` (``where``: which plugin, which call), or
        None when ``exc`` must propagate unchanged (a ``keep`` error, or the user's Ctrl-C)."""
        if isinstance(exc, keep):
            return None
        if isinstance(exc, KeyboardInterrupt):
            if self.signalled or not self._can_tell:
                return None
            return PluginError(f"{where}: KeyboardInterrupt raised by the plugin itself (no Ctrl-C was pressed)")
        return PluginError(f"{where}: {describe_exception(exc)}")


def describe_exception(exc: BaseException) -> str:
    """``TypeName: message`` on one line; ``sys.exit(...)`` is named as such."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@attrs.frozen
class StrategyInfo:
    """One registered strategy: its kind, name, class, and the plugin that provided it."""

    kind: str
    name: str
    cls: type
    plugin: str
    version: str | None = None

    @property
    def help(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def options(self) -> list[attrs.Attribute[Any]]:
        """The recipe options: the strategy class's attrs fields."""
        return list(attrs.fields(self.cls))


class Registry:
    """Named strategies by extension point, with the plugin that registered each.

    Names are lowercase identifiers, unique within a kind; a clash names both plugins.
    """

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, StrategyInfo]] = {kind: {} for kind in KINDS}
        self._current_plugin = "<direct>"
        self._current_version: str | None = None

    def _bind(self, plugin: str, version: str | None) -> None:
        """Attribute the following registrations to ``plugin`` (used by the plugin manager)."""
        self._current_plugin, self._current_version = plugin, version

    def add(self, kind: str, name: str, cls: type) -> None:
        """Register ``cls`` (an attrs class) as strategy ``name`` of ``kind``."""
        if kind not in self._entries:
            raise PluginError(f"plugin {self._current_plugin!r}: unknown extension point {kind!r}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"plugin {self._current_plugin!r}: {kind} name {name!r} must be a lowercase identifier"
            )
        if not attrs.has(cls):
            raise PluginError(
                f"plugin {self._current_plugin!r}: {kind} {name!r} must be an attrs class, got {cls!r}"
            )
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered by both plugin {existing.plugin!r} "
                f"and plugin {self._current_plugin!r}; block one with SQUEEZER_BLOCK_PLUGINS"
            )
        self._entries[kind][name] = StrategyInfo(
            kind, name, cls, self._current_plugin, self._current_version
        )

    def add_importance(self, name: str, cls: type) -> None:
        """Register an importance criterion (see :class:`squeezer.strategies.Importance`)."""
        self.add("importance", name, cls)

    def add_scheduler(self, name: str, cls: type) -> None:
        """Register a sparsity scheduler (see :class:`squeezer.strategies.Scheduler`)."""
        self.add("scheduler", name, cls)

    def add_quantizer(self, name: str, cls: type) -> None:
        """Register a weight quantizer (see :class:`squeezer.strategies.Quantizer`)."""
        self.add("quantizer", name, cls)

    def add_distillation_loss(self, name: str, cls: type) -> None:
        """Register a distillation loss (see :class:`squeezer.strategies.DistillationLoss`)."""
        self.add("distillation_loss", name, cls)

    def add_task(self, name: str, cls: type) -> None:
        """Register a task: what is trained and measured (see :class:`squeezer.strategies.Task`)."""
        self.add("task", name, cls)

    def get(self, kind: str, name: str) -> StrategyInfo:
        """Look up a strategy; an unknown name lists the valid ones and suggests the closest."""
        entries = self._entries[kind]
        if name in entries:
            return entries[name]
        valid = sorted(entries)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownStrategyError(
            f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid) or 'none registered'})"
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def __iter__(self) -> Iterator[StrategyInfo]:
        for kind in KINDS:
            yield from (self._entries[kind][n] for n in sorted(self._entries[kind]))

    def create(self, kind: str, name: str, options: Mapping[str, Any] | None = None, *, where: str = "") -> Any:
        """Build strategy ``name`` with recipe ``options``; bad options name ``where`` and the field."""
        prefix = f"{where}: " if where else ""
        try:
            info = self.get(kind, name)
        except UnknownStrategyError as exc:
            raise UnknownStrategyError(f"{prefix}{exc}") from None
        options = dict(options or {})
        fields = [a for a in attrs.fields(info.cls) if a.init]
        known = {a.name for a in fields}
        missing = [a.name for a in fields if a.default is attrs.NOTHING and a.name not in options]
        if missing:
            raise ConfigError(f"{prefix}{kind} {name!r} needs option {missing[0]!r} (e.g. {{ name = {name!r}, "
                              f"{missing[0]} = ... }})")
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"{prefix}unknown option {unknown[0]!r} for {kind} {name!r} "
                f"(valid: {', '.join(sorted(known)) or 'none'})"
            )
        hints = _field_types(info.cls)
        for key, value in options.items():
            options[key] = _check_type(key, value, hints.get(key), f"{prefix}{kind} {name!r}")
        with PluginBoundary() as boundary:
            try:
                return info.cls(**options)
            except (TypeError, ValueError) as exc:
                first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
                raise ConfigError(f"{prefix}{kind} {name!r}: {first}") from None
            except BaseException as exc:  # a bug in the plugin's class, not a bad option
                where = f"{prefix}{kind} {name!r} (plugin {info.plugin!r}) raised while being built"
                error = boundary.failure(exc, where)
                if error is None:
                    raise
                raise error from exc


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: skip the type check, validators still run
        return {}


def _check_type(key: str, value: Any, hint: Any, where: str) -> Any:
    """Check an option against a plain scalar annotation (int, float, bool, str); others pass."""
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: option {key!r} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: option {key!r} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: option {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: option {key!r} must be a string, got {value!r}")
    return value
