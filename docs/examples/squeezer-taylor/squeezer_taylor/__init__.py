"""squeezer-taylor: first-order Taylor importance and a cosine distillation loss."""

from squeezer import Registry, hookimpl
from squeezer_taylor.importance import TaylorImportance
from squeezer_taylor.losses import CosineKD


@hookimpl
def squeezer_register_importances(registry: Registry) -> None:
    registry.add_importance("taylor", TaylorImportance)


@hookimpl
def squeezer_register_distillation_losses(registry: Registry) -> None:
    registry.add_distillation_loss("cosine", CosineKD)
