"""Calling the user's model and data factories named by import path in a recipe."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from squeezer.errors import ConfigError, SqueezerError
from squeezer.recipe.configs import Factory


def _cwd_importable() -> None:
    """Factories in the user's working directory import as they would with ``python -m``
    (the ``squeezer`` console script does not put the working directory on ``sys.path``)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def resolve(path: str, where: str) -> Any:
    """Import ``pkg.module:attr``; errors name the recipe field."""
    module_name, _, attr = path.partition(":")
    _cwd_importable()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}.factory: cannot import module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}.factory: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}.factory: {path!r} is not callable")
    return obj


def call_factory(factory: Factory, where: str) -> Any:
    """Call a factory with its options; a failure names the factory."""
    fn = resolve(factory.factory, where)
    try:
        return fn(**factory.options)
    except SqueezerError:
        raise
    except TypeError as exc:
        raise ConfigError(f"{where}: factory {factory.factory!r} rejected its options: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"{where}: factory {factory.factory!r} raised {type(exc).__name__}: {exc}") from exc
