"""Creating the plugin manager and building the registry from it.

Every plugin, built-in or third-party, is found through the ``squeezer`` entry-point group; there is
one loading path, so it is exercised on every run. Nothing happens at import time.

Environment switches:

- ``SQUEEZER_DISABLE_PLUGIN_AUTOLOAD=1``: load only the plugins shipped with squeezer itself.
- ``SQUEEZER_BLOCK_PLUGINS=a,b``: do not load the plugins named ``a`` and ``b``.
- ``SQUEEZER_TRACE_HOOKS=1``: print every hook call to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from importlib import metadata

import pluggy

from squeezer import hookspecs
from squeezer.errors import PluginError
from squeezer.registry import KIND_HOOKS, PluginBoundary, Registry

ENTRY_POINT_GROUP = "squeezer"
_OWN_DISTRIBUTION = "squeezer"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def blocked_from_env() -> set[str]:
    raw = os.environ.get("SQUEEZER_BLOCK_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def make_plugin_manager(
    *, autoload: bool | None = None, block: Iterable[str] = (), plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """Return a fresh plugin manager with the hook specs and the installed plugins loaded.

    ``autoload=None`` follows ``SQUEEZER_DISABLE_PLUGIN_AUTOLOAD``; ``block`` adds to
    ``SQUEEZER_BLOCK_PLUGINS``; ``plugins`` are extra plugin objects registered directly (tests).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not _env_flag("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD")
    blocked = blocked_from_env() | set(block)
    for name in blocked:
        pm.set_blocked(name)
    _load_entry_points(pm, third_party=autoload, blocked=blocked)
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if pm.get_plugin(name) is not None:
            name = f"{name}-{id(plugin):x}"
        _register(pm, plugin, name, f"plugin {name!r}")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {getattr(exc.plugin, '__name__', exc.plugin)!r}: {_one_line(exc)}") from None
    if _env_flag("SQUEEZER_TRACE_HOOKS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def _load_entry_points(pm: pluggy.PluginManager, *, third_party: bool, blocked: set[str]) -> None:
    seen: set[str] = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        own = (dist_name or "").lower() == _OWN_DISTRIBUTION
        if ep.name in seen or ep.name in blocked or (not third_party and not own):
            continue
        seen.add(ep.name)
        with PluginBoundary() as boundary:
            try:
                plugin = ep.load()
            except BaseException as exc:  # sys.exit() or a raised KeyboardInterrupt included
                where = f"plugin {ep.name!r} (from {dist_name}, {ep.value}) failed to import"
                error = boundary.failure(exc, where, PluginError)
                if error is None:
                    raise
                raise error from exc
        _register(pm, plugin, ep.name, f"plugin {ep.name!r} (from {dist_name})")
        if dist is not None:
            _VERSIONS[ep.name] = f"{dist_name} {dist.version}"


def _register(pm: pluggy.PluginManager, plugin: object, name: str, label: str) -> None:
    """``pm.register``, which reads the plugin's attributes (a module's ``__getattr__`` is plugin code)."""
    with PluginBoundary() as boundary:
        try:
            pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"{label} is invalid: {_one_line(exc)}") from exc
        except BaseException as exc:
            error = boundary.failure(exc, f"{label} failed to register", PluginError)
            if error is None:
                raise
            raise error from exc


def _one_line(exc: BaseException) -> str:
    """pluggy's validation messages span lines; errors are one line."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


# plugin name -> "distribution version", filled as entry points load
_VERSIONS: dict[str, str] = {}


def plugin_version(name: str) -> str | None:
    """The distribution and version a loaded plugin came from, if it came from one."""
    return _VERSIONS.get(name)


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Call every register hook, one plugin at a time, recording who registered what.

    Each call goes through pluggy's calling path (a hook caller narrowed to that plugin), so
    ``SQUEEZER_TRACE_HOOKS=1`` and pluggy's hook-call monitoring see it. A hook wrapper
    (``wrapper=True`` or ``hookwrapper=True``) is a PluginError naming its plugin: the hooks are
    called per plugin, to attribute each registration, so a wrapper would wrap nothing.
    """
    registry = Registry()
    trace = pm.trace.root.get("registry")
    for hook_name in KIND_HOOKS.values():
        caller = getattr(pm.hook, hook_name)
        impls = caller.get_hookimpls()
        for impl in impls:
            if impl.wrapper or impl.hookwrapper:
                kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: its {hook_name} is a hook wrapper ({kind}), which "
                    "squeezer does not support: register hooks are called once per plugin, so a "
                    "wrapper would wrap nothing; use a plain @hookimpl"
                )
        for impl in impls:
            registry._bind(impl.plugin_name, plugin_version(impl.plugin_name))
            only_this = pm.subset_hook_caller(hook_name, [i.plugin for i in impls if i.plugin is not impl.plugin])
            trace(f"{hook_name} of plugin {impl.plugin_name!r}")
            with PluginBoundary() as boundary:
                try:
                    only_this(registry=registry)
                except BaseException as exc:  # sys.exit() or a raised KeyboardInterrupt included
                    error = boundary.failure(exc, f"plugin {impl.plugin_name!r} raised in {hook_name}", PluginError)
                    if error is None:
                        raise
                    raise error from exc
    registry._bind("<direct>", None)
    return registry


def load_registry(
    *, autoload: bool | None = None, block: Iterable[str] = (), plugins: Iterable[object] = ()
) -> Registry:
    """Shortcut: a fresh plugin manager's registry."""
    return build_registry(make_plugin_manager(autoload=autoload, block=block, plugins=plugins))
