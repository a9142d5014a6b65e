"""Exceptions squeezer raises for bad input.

Every subclass of :class:`SqueezerError` carries a one-line message that names the file, field or
plugin at fault; the CLI prints it without a traceback.
"""

from __future__ import annotations


class SqueezerError(Exception):
    """Base class: a problem the user can fix, reported as one line."""


class ConfigError(SqueezerError, ValueError):
    """A recipe or config value is invalid; the message starts with its path (``recipe.toml: stages[1].bits``)."""


class PluginError(SqueezerError):
    """A plugin failed to load, registered badly, or broke a contract the core checks."""


class UnknownStrategyError(PluginError, KeyError):
    """A recipe named a strategy that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TargetError(SqueezerError, ValueError):
    """Layer targeting matched nothing, or a targeted weight cannot be compressed."""


class ArtifactError(SqueezerError):
    """An artifact or checkpoint is missing, truncated, tampered with or of an unknown version."""


class UntrustedFactoryError(ArtifactError):
    """A file (artifact, checkpoint) names a factory the user has not trusted (:mod:`squeezer.trust`)."""


class TrainingError(SqueezerError):
    """Training diverged (NaN/Inf loss); the last good checkpoint is kept."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch's errors can run to many lines)."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else ""
