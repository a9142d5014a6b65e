"""``quantize``: quantization-aware training without pruning; also how the stages attach targets and quantizers."""

from __future__ import annotations

from collections.abc import Iterator

from squeezer import compress
from squeezer.compress.weight import compressed_weights
from squeezer.engine import attach_pending_quantizers
from squeezer.engine.activations import attach_activations
from squeezer.pipeline.context import Context
from squeezer.pipeline.events import Note
from squeezer.pipeline.stages.base import StageRunner
from squeezer.pipeline.training import batch_to, forward
from squeezer.recipe.configs import Activations, QuantizerChoice, QuantizeStage


def attach_quantizers_once(ctx: Context, choice: QuantizerChoice, where: str) -> dict[str, int]:
    """Attach quantizers to compressed weights that have none yet; record bits per layer."""
    if all(p.quantizer is not None for _, p in compressed_weights(ctx.model)):
        return {}
    bits = attach_pending_quantizers(ctx.model, ctx.registry, choice, where)
    ctx.record.bits.update(bits)
    return bits


def attach_activations_once(ctx: Context, activations: Activations | None, where: str) -> None:
    """Quantize the compressed layers' inputs, calibrated on the first training batches (the engine's rule)."""
    if activations is None:
        return

    def run(n: int) -> Iterator[None]:
        for i, batch in enumerate(ctx.train_loader):
            if i >= n:
                return
            forward(ctx.model, batch_to(batch, ctx.device, ctx.task)[0])
            yield None

    chosen = attach_activations(ctx.model, activations, run, where)
    ctx.sink(Note(f"{where}: {len(chosen)} layer inputs quantized ("
                  + ", ".join(f"{n or 'model'} {b}-bit {'signed' if s else 'unsigned'}" for n, (b, s) in chosen.items())
                  + ")"))


def attach_targets(ctx: Context) -> None:
    """Attach masks to the recipe's targets (idempotent) and report what was skipped."""
    resolution = compress.attach(ctx.model, ctx.recipe.targets)
    if ctx.record.targets is None:
        ctx.record.targets = list(resolution.targets)
        by_reason: dict[str, list[str]] = {}
        for skipped in resolution.skipped:
            by_reason.setdefault(skipped.reason, []).append(skipped.name)
        for reason, names in by_reason.items():  # one line per reason: a ResNet has dozens of BatchNorms
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            ctx.sink(Note(f"skipped {shown}: {reason}"))
        for path, others in compress.weight_aliases(ctx.model).items():
            ctx.sink(Note(f"{path} is tied to {', '.join(others)}: compressed once (one mask, one quantizer)"))


class QuantizeRunner(StageRunner):
    """Attach the stage's quantizer to every compressed weight, then train (QAT)."""

    CONFIG = QuantizeStage
    cfg: QuantizeStage

    def prepare(self, resuming: bool) -> None:
        if resuming:
            return
        attach_targets(self.ctx)
        attach_quantizers_once(self.ctx, self.cfg.quantizer, f"stages[{self.index}].quantizer")
        attach_activations_once(self.ctx, self.cfg.activations, f"stages[{self.index}].activations")
