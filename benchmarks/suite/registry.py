"""The suite's members: one model / data pair each, named as a squeezer recipe names factories.

Each entry's ``model`` and ``data`` are recipe sections (``factory`` plus options), so the bundled
recipe runs on a member with only its ``[model]`` and ``[data]`` tables replaced
(:func:`recipe_tables`). ``splits`` names the member's ``make_splits`` (train, validation, test as
tensor datasets), which the benchmark uses to measure test accuracy and the student's training
accuracy; a recipe never sees the test split.

The factories live in ``benchmarks.suite``, importable from the repository root (squeezer puts the
working directory on the import path for factories). A recipe the user passes is trusted as
written; to let a *file* (artifact or checkpoint) name them, trust them:
``SQUEEZER_TRUST_FACTORIES='benchmarks.suite.*'`` (see ``squeezer.trust``).
"""

from __future__ import annotations

import importlib
from typing import Any

import attrs

TRUST = "benchmarks.suite.*"


@attrs.frozen
class Member:
    name: str
    domain: str
    description: str
    model: dict[str, Any]  # recipe [model] table
    data: dict[str, Any]  # recipe [data] table
    splits: str  # "module:function" returning benchmarks.suite.common.Splits

    def recipe_tables(self, batch_size: int | None = None) -> dict[str, dict[str, Any]]:
        """The ``[model]`` and ``[data]`` tables of a recipe for this member (``batch_size``: keep the
        recipe's when ``None``)."""
        data = dict(self.data)
        if batch_size is not None:
            data["batch_size"] = batch_size
        return {"model": dict(self.model), "data": data}

    def build_model(self) -> Any:
        options = {k: v for k, v in self.model.items() if k != "factory"}
        return _resolve(self.model["factory"])(**options)

    def loaders(self, batch_size: int = 64, **extra: Any) -> Any:
        """The data factory's ``(train_loader, val_loader)`` (``extra``: more options, e.g. ``subset``)."""
        options = {k: v for k, v in self.data.items() if k not in ("factory", "batch_size")}
        return _resolve(self.data["factory"])(batch_size=batch_size, **options, **extra)

    def make_splits(self) -> Any:
        options = {k: v for k, v in self.data.items() if k in ("seed",)}
        return _resolve(self.splits)(**options)


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


S = "benchmarks.suite"
MEMBERS: tuple[Member, ...] = (
    Member("digits_cnn", "vision", "bundled digits CNN (73k weights), 8x8 digits 1,047/300/450",
           {"factory": "squeezer.examples.digits:make_model"},
           {"factory": f"{S}.digits_cnn:make_loaders"}, f"{S}.digits_cnn:make_splits"),
    Member("kws_dscnn", "audio", "bundled KWS DS-CNN (21k weights), generated keyword features 2,400/600/1,200",
           {"factory": "squeezer.examples.kws:make_model"},
           {"factory": f"{S}.kws_dscnn:make_loaders"}, f"{S}.kws_dscnn:make_splits"),
    Member("resnet_shapes", "vision", "ResNet-style, basic blocks + BN (77k weights), generated 16x16 shapes "
           "and textures 2,000/600/1,000",
           {"factory": f"{S}.resnet_shapes:make_model"},
           {"factory": f"{S}.resnet_shapes:make_loaders"}, f"{S}.resnet_shapes:make_splits"),
    Member("mobilenet_digits", "vision", "MobileNetV2-style, depthwise + BN (43k weights), digits at 16x16 with "
           "shifts 1,047/300/450",
           {"factory": f"{S}.mobilenet_digits:make_model"},
           {"factory": f"{S}.mobilenet_digits:make_loaders"}, f"{S}.mobilenet_digits:make_splits"),
    Member("transformer_tokens", "sequence (tokens)", "pre-norm transformer encoder, 2 blocks d=48 (40k "
           "weights), generated 'majority class of the selected colour' token task 3,000/600/1,000",
           {"factory": f"{S}.transformer_tokens:make_model"},
           {"factory": f"{S}.transformer_tokens:make_loaders"}, f"{S}.transformer_tokens:make_splits"),
    Member("gru_sensors", "time series (sensors)", "2-layer GRU h=64 (38k weights), generated 3-axis "
           "accelerometer activity windows 2,400/600/1,200",
           {"factory": f"{S}.gru_sensors:make_model"},
           {"factory": f"{S}.gru_sensors:make_loaders"}, f"{S}.gru_sensors:make_splits"),
)
REGISTRY: dict[str, Member] = {m.name: m for m in MEMBERS}


def get(name: str) -> Member:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown suite member {name!r}; known: {', '.join(REGISTRY)}") from None
