"""Factories and plugins for test_hostile_cli.py (named in recipes as ``hostile_support:<name>``)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
import torch
from torch.utils.data import DataLoader, TensorDataset

from squeezer import hookimpl


def empty_loaders() -> tuple[DataLoader, DataLoader]:
    """A training loader with no batch (drop_last with fewer examples than a batch), a normal val loader."""
    x = torch.rand(8, 1, 8, 8)
    y = torch.zeros(8, dtype=torch.long)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=32, drop_last=True), DataLoader(data, batch_size=8)


class ExitsInHook:
    """Calls sys.exit(code) in its register hook."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.__name__ = f"exits_{code}"

    @hookimpl
    def squeezer_register_quantizers(self, registry: Any) -> None:
        sys.exit(self.code)


class InterruptsInHook:
    """Raises KeyboardInterrupt itself (no signal) in its register hook."""

    __name__ = "raises_interrupt"

    @hookimpl
    def squeezer_register_importances(self, registry: Any) -> None:
        raise KeyboardInterrupt


class CtrlCInHook:
    """A real SIGINT arrives while its register hook runs (the user pressing Ctrl-C)."""

    __name__ = "slow_plugin"

    @hookimpl
    def squeezer_register_importances(self, registry: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted by the signal's KeyboardInterrupt long before


@attrs.frozen(kw_only=True)
class ExitingSchedule:
    """sys.exit() while being built."""

    target: float = 0.5

    def __attrs_post_init__(self) -> None:
        sys.exit(0)


@attrs.frozen(kw_only=True)
class ExitingSparsities:
    target: float = 0.5

    def sparsities(self) -> list[float]:
        sys.exit(4)


@attrs.frozen(kw_only=True)
class EndlessSchedule:
    """A schedule of 10**8 rounds, produced lazily."""

    target: float = 0.5

    def sparsities(self) -> Iterator[float]:
        n = 10**8
        return (self.target * (k + 1) / n for k in range(n))


class Schedules:
    __name__ = "hostile_schedules"

    @hookimpl
    def squeezer_register_schedulers(self, registry: Any) -> None:
        registry.add_scheduler("exiting", ExitingSchedule)
        registry.add_scheduler("exiting_sparsities", ExitingSparsities)
        registry.add_scheduler("endless", EndlessSchedule)
