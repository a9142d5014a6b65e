"""One runner per stage type; the runner loop (:mod:`squeezer.pipeline.runner`) drives them."""

from squeezer.pipeline.stages.base import StageRunner
from squeezer.pipeline.stages.distill import DistillRunner
from squeezer.pipeline.stages.mutual import MutualRunner
from squeezer.pipeline.stages.prune import PruneRunner
from squeezer.pipeline.stages.quantize import QuantizeRunner
from squeezer.pipeline.stages.train import TrainRunner

RUNNERS: dict[str, type[StageRunner]] = {
    "train": TrainRunner,
    "prune": PruneRunner,
    "quantize": QuantizeRunner,
    "mutual": MutualRunner,
    "distill": DistillRunner,
}

__all__ = ["RUNNERS", "StageRunner"]
