"""Built-in plugin: sparsity schedules (one-shot, iterative geometric, Zhu & Gupta cubic)."""

from squeezer import hookimpl
from squeezer.registry import Registry
from squeezer_schedules.schedules import CubicSchedule, GeometricSchedule, OneShotSchedule


@hookimpl
def squeezer_register_schedulers(registry: Registry) -> None:
    registry.add_scheduler("one_shot", OneShotSchedule)
    registry.add_scheduler("geometric", GeometricSchedule)
    registry.add_scheduler("cubic", CubicSchedule)
