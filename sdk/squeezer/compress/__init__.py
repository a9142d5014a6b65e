"""Masks and quantizer wrappers on a user's model (see :mod:`squeezer.compress.weight`)."""

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
)
from squeezer.compress.targets import Resolution, Skipped, Targets, resolve
from squeezer.compress.weight import CompressedWeight, compressed_weights, view

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
    "view",
]
