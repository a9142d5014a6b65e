"""Stage types are declared once: the recipe schema's config classes, each run by one runner."""

from __future__ import annotations

import attrs

from squeezer.pipeline.stages import RUNNERS
from squeezer.recipe.configs import STAGE_TYPES, PruneStage, Strategy, plugin_fields


def test_every_stage_type_has_exactly_one_runner_for_its_config() -> None:
    assert RUNNERS.keys() == STAGE_TYPES.keys()
    for kind, runner in RUNNERS.items():
        assert runner.CONFIG is STAGE_TYPES[kind]


def test_plugin_fields_come_from_config_metadata() -> None:
    stage = PruneStage(scheduler=Strategy(name="geometric", options={"target": 0.5}))
    fields = {name: extension for name, extension, _ in plugin_fields(stage)}
    assert fields == {"importance": "importance", "scheduler": "scheduler"}  # no quantizer: left out
    declared = {f.name: f.metadata["extension"] for cls in STAGE_TYPES.values() for f in attrs.fields(cls)
                if "extension" in f.metadata}
    assert set(declared.values()) == {"importance", "scheduler", "quantizer", "distillation_loss"}
