"""Public functions do not shadow the modules of their package."""

from __future__ import annotations

import importlib
import pkgutil
import types

import squeezer.compress


def test_no_function_shadows_a_compress_module() -> None:
    for info in pkgutil.iter_modules(squeezer.compress.__path__):
        module = importlib.import_module(f"squeezer.compress.{info.name}")
        assert isinstance(getattr(squeezer.compress, info.name), types.ModuleType), info.name
        assert getattr(squeezer.compress, info.name) is module
