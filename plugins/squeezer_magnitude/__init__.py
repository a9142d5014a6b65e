"""Built-in plugin: magnitude importance criteria (L1, L2, and LAMP's layer-normalized magnitude)."""

from squeezer import hookimpl
from squeezer.registry import Registry
from squeezer_magnitude.criteria import L1Magnitude, L2Magnitude, LampScore


@hookimpl
def squeezer_register_importances(registry: Registry) -> None:
    registry.add_importance("l1", L1Magnitude)
    registry.add_importance("l2", L2Magnitude)
    registry.add_importance("lamp", LampScore)
