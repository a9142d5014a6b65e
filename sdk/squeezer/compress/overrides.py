"""Which layers a per-layer override's ``pattern`` names: a glob, or a selector.

Both kinds of override, a quantizer's (on parameter paths) and the activations' (on module
names), match the same way, written once here: a glob (``fnmatch``) on the name without wrapper
prefixes (``module.``, ``_orig_mod.``), or a selector:

- ``@first`` / ``@last``: the first / last compressed layer, in the model's module order;
- ``@depthwise``: every depthwise convolution (``groups == in_channels > 1``), whose few weights
  per channel are the first to suffer from a coarse grid.

A recipe's selectors are checked without torch (:func:`check_pattern`). A glob that matches no layer
of the model is refused (:meth:`Layers.check_used`): a typo would otherwise leave the layer at the
table's settings without a word, as NNCF's ``IgnoredScope(validate=True)`` refuses too. A selector
names a kind of layer, so one recipe serves models with and without it: ``@depthwise`` may name none.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import attrs

from squeezer.compress.targets import strip_wrappers
from squeezer.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

#: the selectors a pattern may be instead of a glob, and what each names
SELECTORS = {
    "@first": "the first compressed layer",
    "@last": "the last compressed layer",
    "@depthwise": "every depthwise convolution (groups == in_channels > 1)",
}


def check_pattern(pattern: str) -> None:
    """Refuse an unknown selector (``@frist``); globs are not checked here, only on a model."""
    if pattern.startswith("@") and pattern not in SELECTORS:
        raise ValueError(f"unknown selector {pattern!r} (known: {', '.join(SELECTORS)}; "
                         "a glob does not start with '@')")


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one group per input channel (and more than one)."""
    from torch import nn

    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.groups == module.in_channels)


@attrs.frozen
class Layers:
    """The names an override may match (parameter paths or module names, in model order) and the
    sets each selector names among them."""

    names: tuple[str, ...]
    depthwise: frozenset[str] = frozenset()

    @classmethod
    def of(cls, model: nn.Module, names: Sequence[str], owner: bool) -> Layers:
        """``names`` of ``model``'s compressed layers; ``owner``: they are parameter paths, whose
        owning module decides ``@depthwise`` (else module names)."""
        def module_of(name: str) -> nn.Module:
            path = name.rpartition(".")[0] if owner else name
            return model.get_submodule(path) if path else model

        return cls(tuple(names), frozenset(n for n in names if is_depthwise(module_of(n))))

    def selected(self, selector: str) -> Collection[str]:
        if selector == "@depthwise":
            return self.depthwise
        if not self.names:
            return ()
        return (self.names[0],) if selector == "@first" else (self.names[-1],)

    def matches(self, pattern: str, name: str) -> bool:
        """Whether ``pattern`` (a glob or a selector) names the layer ``name``."""
        if pattern in SELECTORS:
            return name in self.selected(pattern)
        return fnmatch.fnmatchcase(strip_wrappers(name), pattern)

    def first_match(self, patterns: Sequence[str], name: str) -> int | None:
        """The index of the first of ``patterns`` that names ``name`` (overrides: first match wins)."""
        return next((j for j, p in enumerate(patterns) if self.matches(p, name)), None)

    def check_used(self, patterns: Sequence[str], where: str) -> None:
        """Raise :class:`ConfigError` naming the first glob of ``patterns`` that matches none of the
        layers (selectors may name none)."""
        for j, pattern in enumerate(patterns):
            if pattern not in SELECTORS and not any(self.matches(pattern, n) for n in self.names):
                shown = ", ".join(strip_wrappers(n) for n in self.names[:4])
                more = f" and {len(self.names) - 4} more" if len(self.names) > 4 else ""
                raise ConfigError(f"{where}.overrides[{j}]: pattern {pattern!r} matches no compressed layer "
                                  f"(they are {shown}{more})")
