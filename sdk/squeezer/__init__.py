"""squeezer: plugin-based model compression for PyTorch.

Importing ``squeezer`` does not import torch; the torch-dependent API is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from squeezer.errors import (
    ArtifactError,
    ConfigError,
    PluginError,
    SqueezerError,
    TargetError,
    TrainingError,
    UnknownStrategyError,
)
from squeezer.hookspecs import hookimpl
from squeezer.plugin_manager import build_registry, load_registry, make_plugin_manager
from squeezer.registry import Registry, StrategyInfo

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access (these need torch)
_LAZY = {
    "compress": "squeezer.compress",
    "Targets": "squeezer.compress.targets",
    "load_recipe": "squeezer.recipe",
    "Recipe": "squeezer.recipe",
    "run": "squeezer.pipeline",
    "export": "squeezer.artifact",
    "load": "squeezer.artifact",
    "inspect": "squeezer.artifact",
    "Compression": "squeezer.session",
}

if TYPE_CHECKING:
    from squeezer import compress
    from squeezer.artifact import export, inspect, load
    from squeezer.compress.targets import Targets
    from squeezer.pipeline import run
    from squeezer.recipe import Recipe, load_recipe
    from squeezer.session import Compression


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'squeezer' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    return module if module_name.endswith(f".{name}") else getattr(module, name)


__all__ = [
    "ArtifactError",
    "Compression",
    "ConfigError",
    "PluginError",
    "Recipe",
    "Registry",
    "SqueezerError",
    "StrategyInfo",
    "TargetError",
    "Targets",
    "TrainingError",
    "UnknownStrategyError",
    "__version__",
    "build_registry",
    "compress",
    "export",
    "hookimpl",
    "inspect",
    "load",
    "load_recipe",
    "load_registry",
    "make_plugin_manager",
    "run",
]
