"""pytest plugin (entry point ``pytest11``): fixtures for squeezer plugin authors.

Loaded into every pytest run where squeezer is installed, so it imports neither torch nor typer at
import time; each fixture imports what it needs.

- ``squeezer_registry``: a fresh registry of squeezer's own plugins (third-party autoload off).
- ``squeezer_plugin_manager``: a fresh plugin manager, likewise.
- ``register_plugin``: ``register_plugin(plugin, ...) -> Registry``: a fresh registry of squeezer's
  own plugins plus the given plugin objects (nothing global is changed, so nothing leaks).
- ``toy_model``: a ``(model, input)`` pair from :mod:`squeezer.testing.models`; ``"mlp"`` unless
  parametrized indirectly: ``@pytest.mark.parametrize("toy_model", ["cnn_bn"], indirect=True)``.
- ``cli_runner``: a ``typer.testing.CliRunner``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import pluggy

    from squeezer.registry import Registry
    from squeezer.testing.models import Toy


@pytest.fixture
def squeezer_registry() -> Registry:
    """A fresh registry holding only the plugins shipped with squeezer."""
    from squeezer import load_registry

    return load_registry(autoload=False)


@pytest.fixture
def squeezer_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager holding only the plugins shipped with squeezer."""
    from squeezer import make_plugin_manager

    return make_plugin_manager(autoload=False)


@pytest.fixture
def register_plugin() -> Callable[..., Registry]:
    """``register_plugin(*plugins, block=())``: a fresh registry including the given plugin objects."""
    from squeezer import load_registry

    def register(*plugins: object, block: Iterable[str] = ()) -> Registry:
        return load_registry(autoload=False, block=block, plugins=plugins)

    return register


@pytest.fixture
def toy_model(request: pytest.FixtureRequest) -> Toy:
    """A freshly built toy model and an input batch for it (``model, x = toy_model``)."""
    from squeezer.testing.models import make

    name: str = getattr(request, "param", "mlp")
    return make(name)


@pytest.fixture
def cli_runner() -> Any:
    """A ``typer.testing.CliRunner`` for invoking the ``squeezer`` CLI app."""
    from typer.testing import CliRunner

    return CliRunner()
