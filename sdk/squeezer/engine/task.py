"""The run's task (what is trained and measured), guarded: every driver computes its losses and
metrics through :class:`RunTask`, which checks each result against :mod:`squeezer.contracts` and
names the plugin when one breaks it.

A task's ``ValueError`` means the model's outputs or the batch's targets do not fit the task (the
user's model or data, named by the caller). Anything else it raises passes through as torch's own
errors would (a target out of range is the data's fault, reported with the batch by the loop); a
result that breaks the contract is the plugin's, named in a :class:`PluginError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from squeezer import contracts
from squeezer.errors import PluginError, TrainingError
from squeezer.registry import Registry

#: keys of a dict batch, in order of preference
TARGET_KEYS = ("target", "y", "labels", "label")
INPUT_KEYS = ("input", "x")


def split_batch(batch: Any) -> tuple[Any, Any]:
    """The default split of a loader batch into (inputs, targets).

    A tuple or list is ``(inputs, targets, ...)``. A dict holds its targets under ``target``,
    ``y``, ``labels`` or ``label`` and its inputs under ``input`` or ``x``, or else as all its
    other entries, passed to the model as keyword arguments (``input_ids``, ``attention_mask``).
    """
    if isinstance(batch, Mapping):
        target = next((k for k in TARGET_KEYS if k in batch), None)
        if target is None:
            raise TypeError(f"a dict batch needs its targets under one of {', '.join(TARGET_KEYS)}; "
                            f"it has {', '.join(map(str, batch))}")
        key = next((k for k in INPUT_KEYS if k in batch), None)
        x = batch[key] if key is not None else {k: v for k, v in batch.items() if k != target}
        if isinstance(x, Mapping) and not x:
            raise TypeError("a dict batch needs inputs besides its targets")
        return x, batch[target]
    return batch[0], batch[1]


class TaskMismatch(TrainingError):
    """The model's outputs or the batch's targets do not fit the task (the message says which)."""


class RunTask:
    """A registered task (see :class:`squeezer.strategies.Task`) with its contract checked."""

    def __init__(self, task: Any, name: str, plugin: str) -> None:
        self.task, self.name, self.plugin = task, name, plugin
        self.metric: str = str(getattr(task, "metric", "metric"))
        self.higher_is_better = bool(getattr(task, "higher_is_better", True))

    @classmethod
    def create(cls, registry: Registry, name: str, options: Mapping[str, Any] | None = None,
               where: str = "task") -> RunTask:
        return cls(registry.create("task", name, options, where=where), name, registry.get("task", name).plugin)

    @property
    def label(self) -> str:
        return f"task {self.name!r} (plugin {self.plugin!r})"

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.task, method)(*args)
        except ValueError as exc:
            raise TaskMismatch(f"task {self.name!r}: {exc}") from exc

    def _check(self, method: str, check: Any, value: Any, *args: Any) -> Any:
        try:
            return check(value, *args)
        except contracts.ContractViolation as exc:
            raise PluginError(f"{self.label}: {method}(): {exc}") from None

    def split(self, batch: Any) -> tuple[Any, Any]:
        """The batch's (inputs, targets): the task's own ``split``, or else :func:`split_batch`."""
        custom = getattr(self.task, "split", None)
        result = self._call("split", batch) if custom is not None else None
        if result is None:
            return split_batch(batch)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise PluginError(f"{self.label}: split() must return (inputs, targets) or None")
        return result

    def loss(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        """The training loss of a batch: a scalar, mean over the task's positions."""
        return self._check("loss", contracts.task_loss, self._call("loss", outputs, targets))

    def positions(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        """The outputs at the task's positions as rows ``(N, C)``: what distillation compares."""
        return self._check("positions", contracts.task_positions, self._call("positions", outputs, targets))

    def stats(self, outputs: torch.Tensor, targets: Any) -> dict[str, float]:
        """Summable statistics of a batch (``loss_sum``, ``count``, what the metric needs)."""
        return self._check("stats", contracts.task_stats, self._call("stats", outputs, targets))

    def score(self, stats: Mapping[str, float]) -> float:
        """The metric of the batches whose statistics were summed into ``stats``."""
        return self._check("score", contracts.task_score, self._call("score", stats))


def add_stats(total: dict[str, float], stats: Mapping[str, float]) -> None:
    """Add one batch's statistics into ``total`` (a task's statistics are sums)."""
    for key, value in stats.items():
        total[key] = total.get(key, 0.0) + value
