"""Progress events the pipeline emits. The core never renders them; the CLI does (with rich).

A sink is any callable taking an event; events are frozen attrs classes, so ``attrs.asdict``
serializes them (``squeezer run --json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class RunStarted:
    recipe: str
    stages: tuple[str, ...]
    output_dir: str
    resumed_from: str | None = None


@attrs.frozen
class StageStarted:
    index: int
    name: str
    type: str
    epochs: int
    steps_per_epoch: int


@attrs.frozen
class StepEnded:
    stage: int
    epoch: int
    step: int
    loss: float


@attrs.frozen
class Pruned:
    """One pruning round: target vs achieved sparsity, per layer."""

    stage: int
    round: int
    target: float
    achieved: float
    layers: tuple[tuple[str, float, float], ...]  # (parameter, target, achieved)


@attrs.frozen
class EpochEnded:
    stage: int
    epoch: int
    loss: float
    accuracy: float
    sparsity: float
    bits: str
    extra: dict[str, float] = attrs.field(factory=dict)
    #: the task's metric that ``accuracy`` holds (``"perplexity"`` for a language model)
    metric: str = "accuracy"


@attrs.frozen
class StageEnded:
    index: int
    name: str
    accuracy: float
    metric: str = "accuracy"


@attrs.frozen
class Checkpointed:
    path: str


@attrs.frozen
class Note:
    """Something the user should know (skipped layers, warnings)."""

    text: str
    level: str = "info"


Event = RunStarted | StageStarted | StepEnded | Pruned | EpochEnded | StageEnded | Checkpointed | Note
Sink = Callable[[Any], None]


def discard(event: Any) -> None:
    """The default sink: ignore events."""
