"""Calling the model and data factories named by import path in a recipe (or in a file's record)."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from squeezer.errors import ConfigError, SqueezerError, UntrustedFactoryError
from squeezer.recipe.configs import Factory
from squeezer.trust import Trust


def _cwd_importable() -> None:
    """Factories in the user's working directory import as they would with ``python -m``
    (the ``squeezer`` console script does not put the working directory on ``sys.path``)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def resolve(path: str, where: str, trust: Trust | None = None, named_by: str = "") -> Any:
    """Import ``pkg.module:attr``; errors name the recipe field.

    ``trust`` is given when a file, not the user, names the factory (``named_by`` says which):
    then nothing is imported unless ``trust`` allows the path, no ``_private`` attribute is
    followed, and the callable must be defined in a trusted module (see :mod:`squeezer.trust`).
    """
    module_name, _, attr = path.partition(":")
    if trust is not None:
        _check_trusted(path, trust, named_by or where)
    _cwd_importable()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and missing and (module_name + ".").startswith(missing + "."):
            hint = f"; only the current directory ({os.getcwd()}) and installed packages are importable"
        raise ConfigError(f"{where}.factory: cannot import module {module_name!r}: {exc}{hint}") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError(f"{where}.factory: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}.factory: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj) or inspect.ismodule(obj):
        raise ConfigError(f"{where}.factory: {path!r} is not callable")
    if trust is not None:
        origin = getattr(obj, "__module__", None)
        if origin != module_name and not (isinstance(origin, str) and trust.allows_module(origin)):
            raise UntrustedFactoryError(f"{named_by or where}: the factory {path!r} is defined in {origin!r}, "
                                        "which is not trusted (a trusted module's imports are not callable "
                                        "through it)")
    return obj


def _check_trusted(path: str, trust: Trust, named_by: str) -> None:
    _, _, attr = path.partition(":")
    if not trust.allows(path):
        raise UntrustedFactoryError(trust.refusal(path, named_by))
    if any(not part or part.startswith("_") for part in attr.split(".")):
        raise UntrustedFactoryError(f"{named_by}: factory {path!r} reaches a private attribute; refusing it")


def call_factory(factory: Factory, where: str, trust: Trust | None = None, named_by: str = "") -> Any:
    """Call a factory with its options; a failure names the factory.

    Whatever the user's code raises, ``sys.exit()`` included, becomes a :class:`ConfigError`
    naming the factory; only Ctrl-C (``KeyboardInterrupt``) passes through as the interruption it is.
    """
    fn = resolve(factory.factory, where, trust, named_by)
    try:
        return fn(**factory.options)
    except SqueezerError:
        raise
    except TypeError as exc:
        raise ConfigError(f"{where}: factory {factory.factory!r} rejected its options: {exc}") from None
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        raise ConfigError(f"{where}: factory {factory.factory!r} called sys.exit({exc.code!r})") from None
    except BaseException as exc:
        raise ConfigError(f"{where}: factory {factory.factory!r} raised {type(exc).__name__}: {exc}") from exc


def build_module(
    factory: Factory,
    where: str,
    trust: Trust | None = None,
    named_by: str = "",
    fits: Callable[[Any], None] | None = None,
) -> Any:
    """Call a model factory and check that it returned an ``nn.Module``.

    When a file names the factory (``trust`` given), the file also chose its options, which could
    ask for an enormous model: the model is then first built on torch's ``meta`` device (no
    memory) and passed to ``fits``, which raises if it does not match what the file holds; only
    then is it built for real. A factory that cannot build on ``meta`` is built directly.
    """
    import torch
    from torch import nn

    def build() -> nn.Module:
        model = call_factory(factory, where, trust, named_by)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{where}.factory: {factory.factory!r} returned {type(model).__name__}, "
                              "not an nn.Module")
        return model

    if trust is not None and fits is not None:
        try:
            with torch.device("meta"):
                shell = build()
        except ConfigError as exc:
            if not isinstance(exc.__cause__, NotImplementedError | RuntimeError):
                raise
        else:
            fits(shell)
    return build()
