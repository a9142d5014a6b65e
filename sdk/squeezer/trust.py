"""Which factories squeezer may call when a *file* names them (an artifact, a checkpoint).

A recipe the user passes is the user's own word: its factories are called as written. An
artifact or checkpoint also records factories (``pkg.module:function`` with options), but anyone
can edit that record and recompute the checksum, which proves integrity, not origin. So a factory
named by a file is imported and called only when it matches a pattern the user trusts:

- ``squeezer.examples.*``, squeezer's own bundled examples (always);
- the patterns in the environment variable ``SQUEEZER_TRUST_FACTORIES`` (comma-separated);
- the patterns passed in code (``squeezer.load(path, trust=[...])``) or on the command line
  (``--trust-factory``).

A pattern is an ``fnmatch`` glob. With a colon it matches the whole path (``mypkg.models:make``,
``mypkg.*:make_*``); without one it matches the module (``mypkg`` or ``mypkg.*``). ``*`` trusts
everything, as squeezer did before. Nothing is imported before the check, attribute paths may
not pass through ``_private`` names, and the callable found must be defined in the named module
or another trusted one, so a trusted module's imports (``os``, ``subprocess``) are not reachable
through it.

This module is torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fnmatch import fnmatchcase

import attrs

ENV = "SQUEEZER_TRUST_FACTORIES"
BUILTIN = ("squeezer.examples", "squeezer.examples.*")


def _patterns(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(p.strip() for p in value if p.strip())


@attrs.frozen
class Trust:
    """The patterns of factory paths that a file may name (see the module docstring)."""

    patterns: tuple[str, ...] = attrs.field(default=(), converter=_patterns)

    @classmethod
    def default(cls, extra: Iterable[str] = ()) -> Trust:
        """The built-in patterns, those of ``SQUEEZER_TRUST_FACTORIES`` and ``extra``."""
        return cls((*BUILTIN, *os.environ.get(ENV, "").split(","), *extra))

    def allows_module(self, module: str) -> bool:
        return any(":" not in p and fnmatchcase(module, p) for p in self.patterns)

    def allows(self, path: str) -> bool:
        """Whether the factory ``pkg.module:attr`` may be imported and called."""
        module, _, _ = path.partition(":")
        return self.allows_module(module) or any(":" in p and fnmatchcase(path, p) for p in self.patterns)

    def refusal(self, path: str, named_by: str) -> str:
        """The one-line error for a factory this trust does not allow, saying how to proceed."""
        return (f"{named_by} names the factory {path!r}, which squeezer does not import or call on a "
                f"file's word; pass the model or recipe yourself, or trust it: --trust-factory '{path}', "
                f"{ENV}='{path}' or trust=['{path}'] in Python (docs/reliability.md, threat model)")


def merged(trust: Trust | Iterable[str] | None) -> Trust:
    """A :class:`Trust` from what an API caller passed (``None``: the default)."""
    if isinstance(trust, Trust):
        return trust
    return Trust.default(() if trust is None else ([trust] if isinstance(trust, str) else trust))
