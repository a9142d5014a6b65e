"""squeezer-taylor: first-order Taylor importance, a cosine distillation loss and a multi-label task."""

from squeezer import Registry, hookimpl
from squeezer_taylor.importance import TaylorImportance
from squeezer_taylor.losses import CosineKD
from squeezer_taylor.tasks import MultiLabel


@hookimpl
def squeezer_register_importances(registry: Registry) -> None:
    registry.add_importance("taylor", TaylorImportance)


@hookimpl
def squeezer_register_distillation_losses(registry: Registry) -> None:
    registry.add_distillation_loss("cosine", CosineKD)


@hookimpl
def squeezer_register_tasks(registry: Registry) -> None:
    registry.add_task("multilabel", MultiLabel)
