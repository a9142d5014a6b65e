"""A pruning round on the schedule: the one implementation behind the ``prune`` stage,
:class:`squeezer.Compression` and the trainer callbacks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from squeezer import compress
from squeezer.engine.params import forget_pruned, fresh_state
from squeezer.engine.quantizers import attach_pending_quantizers, quantizer_parameters
from squeezer.errors import ConfigError
from squeezer.recipe.configs import QuantizerChoice
from squeezer.registry import Registry


@attrs.define(kw_only=True)
class Pruner:
    """Iterative pruning of ``model``: round ``r`` prunes to ``schedule[r]``; pruned weights stay
    pruned. The driver calls :meth:`round` when a round is due; the training loop is the driver's."""

    model: nn.Module
    registry: Registry
    importance: Callable[..., torch.Tensor]
    importance_name: str  # the registry name, e.g. "l1"
    importance_plugin: str | None = None  # the plugin that registered it, named in messages when known
    schedule: Sequence[float]
    scope: str = "global"
    min_density: float = 0.0
    keep_rows: bool = True
    quantizer: QuantizerChoice | None = None
    quantizer_where: str = "quantizer"
    rounds_done: int = 0
    #: how the pruner reports a round that empties rows or layers (default: ``warnings.warn``)
    warn: Callable[[str], None] = attrs.field(default=lambda message: warnings.warn(message, stacklevel=4))
    _empty_rows: dict[str, int] = attrs.field(factory=dict, init=False)

    @property
    def done(self) -> bool:
        """True once every scheduled round has run."""
        return self.rounds_done >= len(self.schedule)

    @property
    def importance_source(self) -> str:
        """How messages name the criterion: ``importance 'l1' (plugin 'magnitude')``."""
        plugin = f" (plugin {self.importance_plugin!r})" if self.importance_plugin else ""
        return f"importance {self.importance_name!r}{plugin}"

    @property
    def needs_gradients(self) -> bool:
        return bool(getattr(self.importance, "needs_gradients", False))

    def round(
        self, optimizer: torch.optim.Optimizer | None = None, gradients: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[list[compress.LayerSparsity], dict[str, int]]:
        """Run the next round: prune, forget the optimizer's state at newly pruned entries, then
        attach quantizers to the weights that have none (so they start from the pruned weights).

        Quantizers made pending at attach time (:meth:`squeezer.Compression.attach`) are switched
        on, initialized in place: their parameters are the ones the optimizer already holds, whose
        state (left by zero gradients) is forgotten. Returns the per-layer sparsity and the bits
        of the weights quantized now.
        """
        if self.done:
            raise ConfigError(f"all {len(self.schedule)} scheduled pruning rounds have run")
        grads = dict(gradients or {})

        def score(path: str, w: torch.Tensor) -> Any:
            return self.importance(w, grads.get(path))

        layers = compress.prune(self.model, score, self.schedule[self.rounds_done], scope=self.scope,
                                min_density=self.min_density, keep_rows=self.keep_rows, source=self.importance_source)
        self.rounds_done += 1
        self._report_emptied(layers)
        self._report_short(layers, self.schedule[self.rounds_done - 1])
        if optimizer is not None:
            forget_pruned(self.model, optimizer)
        bits = compress.switch_on_quantizers(self.model, source=self.quantizer_where)
        if self.quantizer is not None:
            bits |= attach_pending_quantizers(self.model, self.registry, self.quantizer, self.quantizer_where)
        if optimizer is not None and bits:
            fresh_state(optimizer, quantizer_parameters(self.model))
        return layers, bits

    def _report_emptied(self, layers: Sequence[compress.LayerSparsity]) -> None:
        """Say when a round leaves more rows (output channels, class rows) with no weight than
        pruning the layer at random to the round's target would (twice the
        expected ``rows * target**k`` for rows of ``k`` entries): global L1 does that to layers of
        small weights (depthwise convolutions, classifier heads), which then output constants."""
        for layer in layers:
            before = self._empty_rows.get(layer.name, 0)
            self._empty_rows[layer.name] = layer.empty_rows
            if (layer.empty_rows > before and layer.empty_rows >= max(1, layer.rows // 100)
                  and layer.empty_rows > 2 * _expected_empty_rows(layer)):
                self.warn(f"pruning round {self.rounds_done}: {layer.empty_rows} of {layer.rows} rows (output "
                          f"channels or classes) of {layer.name} are pruned entirely ({self.importance_source}); "
                          f"{emptied_rows_remedy(self.importance_name)} keeps them")

    def _report_short(self, layers: Sequence[compress.LayerSparsity], target: float) -> None:
        """Say when what every layer must keep (``min_density``, one weight per row with
        ``keep_rows``) stops a global round short of its target by more than 0.1 point."""
        total = sum(layer.numel for layer in layers)
        achieved = sum(layer.zeros for layer in layers) / total if total else 0.0
        if self.scope == "global" and achieved < target - 1e-3:
            kept, remedy = (("min_density and keep_rows keep", "a lower min_density, or keep_rows = false")
                            if self.keep_rows else ("min_density keeps", "a lower min_density"))
            self.warn(f"pruning round {self.rounds_done}: sparsity {achieved:.2%} of the target {target:.2%}: "
                      f"{kept} more weights than the target leaves ({remedy})")


def emptied_rows_remedy(importance_name: str) -> str:
    """What keeps rows alive (rows emptied by the mask only happen with ``keep_rows`` off), not
    suggesting LAMP to a run that already prunes by LAMP."""
    if importance_name == "lamp":
        return "keep_rows = true, a lower target or a higher min_density"
    return "keep_rows = true, a layer-adaptive importance such as 'lamp', a lower target or a higher min_density"


def _expected_empty_rows(layer: compress.LayerSparsity) -> float:
    """Rows with no weight left had the layer been pruned at random to the round's target."""
    if not layer.rows:
        return 0.0
    return float(layer.rows * layer.target ** (layer.numel // layer.rows))
