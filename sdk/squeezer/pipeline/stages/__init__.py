"""One runner per stage type; the runner loop (:mod:`squeezer.pipeline.runner`) drives them."""

from squeezer.pipeline.stages.base import StageRunner
from squeezer.pipeline.stages.distill import DistillRunner
from squeezer.pipeline.stages.mutual import MutualRunner
from squeezer.pipeline.stages.prune import PruneRunner
from squeezer.pipeline.stages.quantize import QuantizeRunner
from squeezer.pipeline.stages.train import TrainRunner

#: stage type -> its runner; every stage type of the recipe schema has one (tests/pipeline/test_stages.py)
RUNNERS: dict[str, type[StageRunner]] = {
    runner.CONFIG.TYPE: runner for runner in (TrainRunner, PruneRunner, QuantizeRunner, MutualRunner, DistillRunner)
}

__all__ = ["RUNNERS", "StageRunner"]
