"""The recipe-driven pipeline: ordered stages, progress events, checkpoints, the artifact."""

from squeezer.pipeline.loop import Interrupted
from squeezer.pipeline.runner import DEFAULT_RECIPE, RunResult, run

__all__ = ["DEFAULT_RECIPE", "Interrupted", "RunResult", "run"]
