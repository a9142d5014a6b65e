"""``train``: supervised training of the model as it is (dense, or fine-tuning a compressed net)."""

from squeezer.pipeline.stages.base import StageRunner
from squeezer.recipe.configs import TrainStage


class TrainRunner(StageRunner):
    """Cross-entropy training; masks and quantizers already attached keep applying."""

    CONFIG = TrainStage

    def finish(self) -> None:
        if self.ctx.record.dense_accuracy is None and not _compressed(self):
            self.ctx.record.dense_accuracy = self.accuracy()


def _compressed(runner: StageRunner) -> bool:
    from squeezer.compress.weight import compressed_weights

    return any(not bool(p.mask.all()) or p.quantizer is not None for _, p in compressed_weights(runner.ctx.model))
