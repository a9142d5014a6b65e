"""Built-in plugin: distillation losses (Hinton KD, logit MSE)."""

from squeezer import hookimpl
from squeezer.registry import Registry
from squeezer_distill.losses import HintonKD, LogitMSE


@hookimpl
def squeezer_register_distillation_losses(registry: Registry) -> None:
    registry.add_distillation_loss("hinton", HintonKD)
    registry.add_distillation_loss("mse", LogitMSE)
