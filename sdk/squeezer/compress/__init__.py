"""Masks and quantizer wrappers on a user's model (see :mod:`squeezer.compress.weight`).

Importing this package does not import torch: :class:`Targets` (a recipe section) is torch-free,
and the tensor code is loaded on first use of a name that needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from squeezer.compress.targets import Resolution, Skipped, Targets, resolve

# public name -> module that defines it, imported on first access (these need torch)
_LAZY = {
    **dict.fromkeys(
        ("LayerSparsity", "attach", "attach_paths", "attach_quantizers", "bake", "masks", "original", "prune",
         "restore", "sparsity", "spec", "switch_on_quantizers"),
        "squeezer.compress.model",
    ),
    **dict.fromkeys(("CompressedWeight", "compressed_weights", "view", "weight_aliases"), "squeezer.compress.weight"),
}

if TYPE_CHECKING:
    from squeezer.compress.model import (
        LayerSparsity,
        attach,
        attach_paths,
        attach_quantizers,
        bake,
        masks,
        original,
        prune,
        restore,
        sparsity,
        spec,
        switch_on_quantizers,
    )
    from squeezer.compress.weight import CompressedWeight, compressed_weights, view, weight_aliases


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:  # AttributeError lets `from squeezer.compress import bitmask` import the submodule
        raise AttributeError(f"module 'squeezer.compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "CompressedWeight",
    "LayerSparsity",
    "Resolution",
    "Skipped",
    "Targets",
    "attach",
    "attach_paths",
    "attach_quantizers",
    "bake",
    "compressed_weights",
    "masks",
    "original",
    "prune",
    "resolve",
    "restore",
    "sparsity",
    "spec",
    "switch_on_quantizers",
    "view",
    "weight_aliases",
]
