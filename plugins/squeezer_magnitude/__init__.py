"""Built-in plugin: magnitude importance criteria (L1 and L2)."""

from squeezer import hookimpl
from squeezer.registry import Registry
from squeezer_magnitude.criteria import L1Magnitude, L2Magnitude


@hookimpl
def squeezer_register_importances(registry: Registry) -> None:
    registry.add_importance("l1", L1Magnitude)
    registry.add_importance("l2", L2Magnitude)
