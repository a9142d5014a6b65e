"""The compression engine: the rules every driver (the recipe runner's stages, ``Compression`` in
your own loop, the Lightning and Hugging Face callbacks) applies the same way.

- :mod:`.params`: which parameters are which (stored originals, quantizer parameters, the rest),
  their optimizer groups (no weight decay once pruned, the quantizers' learning-rate scale), and
  forgetting optimizer state at pruned entries;
- :mod:`.quantizers`: choosing each weight's quantizer (per-layer overrides) and attaching it;
- :mod:`.pruner`: a pruning round on the schedule;
- :mod:`.activations`: LSQ quantizers on the compressed layers' inputs, chosen, calibrated and attached;
- :mod:`.mutual`: PQK Phase 2's optimizer groups and mutual loss;
- :mod:`.task`: the run's task (loss, distillation positions, metric) with its contract checked;
- :mod:`.schedule`: a recipe's stages on one epoch counter (when rounds and Phase 2 happen).

Drivers decide *when* to call these; the engine decides *what* happens. It knows no stages,
recipes files or progress rendering.
"""

from squeezer.engine.mutual import mutual_groups, mutual_loss
from squeezer.engine.params import (
    forget_pruned,
    fresh_state,
    no_decay_on_compressed,
    param_groups,
    split_parameters,
)
from squeezer.engine.pruner import Pruner
from squeezer.engine.quantizers import attach_pending_quantizers, quantizer_chooser, quantizer_parameters

__all__ = [
    "Pruner",
    "attach_pending_quantizers",
    "forget_pruned",
    "fresh_state",
    "mutual_groups",
    "mutual_loss",
    "no_decay_on_compressed",
    "param_groups",
    "quantizer_chooser",
    "quantizer_parameters",
    "split_parameters",
]
