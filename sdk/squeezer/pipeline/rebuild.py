"""Building a run's model and data again: for a run, its resume, ``squeezer eval`` and ``export``.

Which architecture a run's model has at any point is derived from the recipe (a ``distill``
stage with a ``student`` swaps it), never read from a factory recorded in a checkpoint, so a
resumed run calls only the factories of the recipe the user passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer import compress
from squeezer.engine.activations import restore_from_state
from squeezer.errors import ArtifactError, ConfigError, SqueezerError
from squeezer.factories import build_module, call_factory
from squeezer.recipe.configs import DistillStage, Factory, Recipe
from squeezer.registry import Registry
from squeezer.trust import Trust


def factory_at(recipe: Recipe, stage: int, started: bool = False) -> tuple[Factory, str]:
    """The factory of the model a run of ``recipe`` holds before stage ``stage`` (or, when
    ``started``, during it), with the recipe field that names it."""
    found, where = recipe.model, "model"
    last = stage if started else stage - 1
    for index, cfg in enumerate(recipe.stages[: last + 1]):
        if isinstance(cfg, DistillStage) and cfg.student is not None:
            found, where = cfg.student, f"stages[{index}].student"
    return found, where


def final_factory(recipe: Recipe) -> tuple[Factory, str]:
    """The factory of the model a run of ``recipe`` ends with."""
    return factory_at(recipe, len(recipe.stages))


def build_loaders(recipe: Recipe, trust: Trust | None = None, named_by: str = "") -> tuple[Any, Any]:
    """The ``(train_loader, val_loader)`` of ``recipe``'s data factory, checked for shape."""
    loaders = call_factory(recipe.data, "data", trust, named_by)
    name = recipe.data.factory
    if not (isinstance(loaders, tuple | list) and len(loaders) == 2):
        raise ConfigError(f"data.factory: {name!r} must return (train_loader, val_loader), "
                          f"got {type(loaders).__name__}")
    for loader, which in zip(loaders, ("train", "validation"), strict=True):
        check_loader(loader, f"data.factory: {name!r}: the {which} loader")
    return loaders[0], loaders[1]


def check_loader(loader: Any, where: str) -> None:
    """Refuse what cannot be a loader: something iterated only once (a generator) or a dataset of
    single samples, which would train on batches of one."""
    if isinstance(loader, torch.utils.data.Dataset) and not isinstance(loader, torch.utils.data.IterableDataset):
        raise ConfigError(f"{where} is a {type(loader).__name__} (a dataset of single samples); "
                          "wrap it: torch.utils.data.DataLoader(dataset, batch_size=...)")
    if not isinstance(loader, Iterable) or isinstance(loader, Iterator):
        raise ConfigError(f"{where} must be a re-iterable loader (a DataLoader or a list of batches), "
                          f"got {type(loader).__name__}, which one epoch would exhaust")


def restore_model(
    recipe: Recipe,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    registry: Registry,
    path: Path,
    trust: Trust | None = None,
) -> nn.Module:
    """The compressed model of a checkpoint of ``recipe``: built, re-compressed, its state loaded.

    ``trust`` is given when ``recipe`` is the one recorded in the checkpoint (not the user's).
    """
    started = meta["epoch"] > 0 or meta.get("step", 0) > 0
    factory, where = factory_at(recipe, meta["stage"], started)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    stored = sum(t.numel() for t in state.values())

    def fits(shell: nn.Module) -> None:  # compression only adds state: the plain model is smaller
        claimed = sum(t.numel() for t in shell.state_dict().values())
        if claimed > stored:
            raise ArtifactError(f"{path}: {where} {factory.factory!r} with the recorded options builds "
                                f"{claimed:,} values; the checkpoint holds {stored:,}")

    model = build_module(factory, where, trust, f"{path} (recorded recipe)", fits)
    try:
        compress.restore(model, meta["spec"], registry)
        restore_from_state(model, state)  # activation quantizers: their grids are in the state
    except SqueezerError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: checkpoint metadata: spec does not fit the recipe's model "
                            f"({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(f"{path}: checkpoint does not fit the recipe's model ({first})") from None
    return model


def artifact_info(recipe: Recipe) -> dict[str, Any]:
    """What an artifact records of the run that made it: the recipe (without its output
    directory, which would make two equal runs differ byte for byte) and the final model's
    factory, so that ``squeezer.load(path)`` can build it where the user trusts that factory."""
    from squeezer.recipe.loader import recipe_to_dict

    factory, _ = final_factory(recipe)
    recorded = recipe_to_dict(recipe)
    recorded.pop("output_dir", None)
    return {"recipe": recorded, "model_factory": factory.factory, "model_options": factory.options}
