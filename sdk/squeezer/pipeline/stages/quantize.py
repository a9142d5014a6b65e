"""``quantize``: quantization-aware training without pruning; also the quantizer choice shared with ``prune``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from squeezer import compress
from squeezer.compress.targets import strip_wrappers
from squeezer.compress.weight import compressed_weights
from squeezer.pipeline.context import Context
from squeezer.pipeline.events import Note
from squeezer.pipeline.stages.base import StageRunner
from squeezer.recipe.configs import QuantizerChoice, QuantizeStage
from squeezer.registry import Registry


def quantizer_chooser(model: nn.Module, registry: Registry, choice: QuantizerChoice,
                      where: str) -> Callable[[str], tuple[str, Any] | None]:
    """``path -> (name, config)`` honouring per-layer overrides (first match wins; '@first'/'@last')."""
    paths = [path for path, _ in compressed_weights(model)]
    aliases = {"@first": paths[0], "@last": paths[-1]} if paths else {}
    base = registry.create("quantizer", choice.name, choice.options, where=where)

    def choose(path: str) -> tuple[str, Any] | None:
        plain = strip_wrappers(path)
        for j, override in enumerate(choice.overrides):
            alias = aliases.get(override.pattern)
            hit = path == alias if alias else fnmatch.fnmatchcase(plain, override.pattern)
            if hit:
                if override.skip:
                    return None
                options = {**choice.options, **override.options}
                return choice.name, registry.create(
                    "quantizer", choice.name, options, where=f"{where}.overrides[{j}]"
                )
        return choice.name, base

    return choose


def attach_pending_quantizers(model: nn.Module, registry: Registry, choice: QuantizerChoice,
                              where: str) -> dict[str, int]:
    """Attach quantizers to the compressed weights that have none yet; returns bits per newly
    quantized weight. Shared by the ``prune`` and ``quantize`` stages and :class:`~squeezer.session.Compression`."""
    if all(p.quantizer is not None for _, p in compressed_weights(model)):
        return {}
    choose = quantizer_chooser(model, registry, choice, where)
    pending = {path for path, p in compressed_weights(model) if p.quantizer is None}
    return compress.attach_quantizers(model, lambda path: choose(path) if path in pending else None)


def attach_quantizers_once(ctx: Context, choice: QuantizerChoice, where: str) -> dict[str, int]:
    """Attach quantizers to compressed weights that have none yet; record bits per layer."""
    if all(p.quantizer is not None for _, p in compressed_weights(ctx.model)):
        return {}
    bits = attach_pending_quantizers(ctx.model, ctx.registry, choice, where)
    ctx.records.setdefault("bits", {}).update(bits)
    return bits


def attach_targets(ctx: Context) -> None:
    """Attach masks to the recipe's targets (idempotent) and report what was skipped."""
    resolution = compress.attach(ctx.model, ctx.recipe.targets)
    if "targets" not in ctx.records:
        ctx.records["targets"] = list(resolution.targets)
        by_reason: dict[str, list[str]] = {}
        for skipped in resolution.skipped:
            by_reason.setdefault(skipped.reason, []).append(skipped.name)
        for reason, names in by_reason.items():  # one line per reason: a ResNet has dozens of BatchNorms
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            ctx.sink(Note(f"skipped {shown}: {reason}"))


class QuantizeRunner(StageRunner):
    """Attach the stage's quantizer to every compressed weight, then train (QAT)."""

    cfg: QuantizeStage

    def prepare(self, resuming: bool) -> None:
        if resuming:
            return
        attach_targets(self.ctx)
        attach_quantizers_once(self.ctx, self.cfg.quantizer, f"stages[{self.index}].quantizer")
