"""Skipped layers are reported once per reason, not once per module (a ResNet has dozens of norms)."""

from __future__ import annotations

from pathlib import Path

import squeezer
from squeezer.pipeline.events import Note
from squeezer.pipeline.runner import run
from squeezer.recipe.loader import parse_recipe

RECIPE = """
[model]
factory = "squeezer.examples.kws:make_model"
width = 8
blocks = 4
[data]
factory = "squeezer.examples.kws:make_loaders"
n_train = 64
n_val = 32
[[stages]]
type = "prune"
scheduler = { name = "one_shot", target = 0.5 }
epochs_per_round = 0
"""


def test_one_note_per_skip_reason(tmp_path: Path) -> None:
    registry = squeezer.load_registry(autoload=False)
    notes: list[str] = []
    run(parse_recipe(RECIPE, registry=registry), out=tmp_path, registry=registry, export=False,
        sink=lambda e: notes.append(e.text) if isinstance(e, Note) else None)
    assert notes == ["skipped stem.1, blocks.0.1, blocks.0.4, blocks.1.1 and 5 more: type BatchNorm2d not targeted"]
