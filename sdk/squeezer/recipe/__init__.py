"""Recipes: TOML files validated into frozen attrs configs."""

from squeezer.recipe.budget import Resolution, resolve_budget
from squeezer.recipe.configs import (
    STAGE_TYPES,
    Budget,
    DistillStage,
    Factory,
    MutualStage,
    Optim,
    PruneStage,
    QuantizerChoice,
    QuantizerOverride,
    QuantizeStage,
    Recipe,
    Stage,
    Strategy,
    TrainStage,
)
from squeezer.recipe.loader import (
    check_strategies,
    checked_schedule,
    load_recipe,
    parse_recipe,
    recipe_from_dict,
    recipe_to_dict,
    with_factories,
)

__all__ = [
    "STAGE_TYPES",
    "Budget",
    "DistillStage",
    "Factory",
    "MutualStage",
    "Optim",
    "PruneStage",
    "QuantizeStage",
    "QuantizerChoice",
    "QuantizerOverride",
    "Recipe",
    "Resolution",
    "Stage",
    "Strategy",
    "TrainStage",
    "check_strategies",
    "checked_schedule",
    "load_recipe",
    "parse_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "resolve_budget",
    "with_factories",
]
