"""The deployable artifact of a compressed model: small, verified, and safe to load.

``export(model, path)`` writes the student ``Q(W ⊙ M)`` of a compressed model to a safetensors
file close to its information content (bit-packed codes of the kept weights, an entropy-coded
mask, scales, the rest of the state as it is); ``load(path, model)`` reads it back into a plain
model; ``inspect(path)`` reports sizes against the bound ``nnz * b + n * H(density)``. The layout
is described in :mod:`squeezer.artifact.format`.
"""

from squeezer.artifact.reader import load, load_state_dict
from squeezer.artifact.report import ArtifactReport, LayerReport, inspect, torch_save_size
from squeezer.artifact.writer import export

__all__ = ["ArtifactReport", "LayerReport", "export", "inspect", "load", "load_state_dict", "torch_save_size"]
