"""Rebuilding a recipe's model and data for ``eval`` and ``export`` (imports torch: call lazily)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from squeezer.errors import ConfigError
from squeezer.pipeline.factories import call_factory
from squeezer.recipe import DistillStage, Factory, Recipe


def final_factory(recipe: Recipe, records: Mapping[str, Any] | None = None) -> Factory:
    """The factory of the model a run of ``recipe`` ends with (a ``distill`` stage may swap it)."""
    if records and "model_factory" in records:
        return Factory(**records["model_factory"])
    for stage in recipe.stages:
        if isinstance(stage, DistillStage) and stage.student is not None:
            return stage.student
    return recipe.model


def build_model(factory: Factory) -> nn.Module:
    model = call_factory(factory, "model")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory: {factory.factory!r} returned {type(model).__name__}, not an nn.Module")
    return model


def val_loader(recipe: Recipe) -> Any:
    loaders = call_factory(recipe.data, "data")
    if not (isinstance(loaders, tuple | list) and len(loaders) == 2):
        raise ConfigError(f"data.factory: {recipe.data.factory!r} must return (train_loader, val_loader)")
    return loaders[1]


def device(name: str) -> torch.device:
    """A recipe's ``device`` (see :func:`squeezer.pipeline.runner.resolve_device`)."""
    from squeezer.pipeline.runner import resolve_device

    return resolve_device(name)
