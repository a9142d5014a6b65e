"""Phase 2 with ``student_distills = "when_teacher_leads"`` end to end: the recipe field reaches the
mutual stage, which reports per epoch the share of batches on which the student distilled."""

from __future__ import annotations

from pathlib import Path

import pytest

import squeezer
from squeezer.pipeline.events import EpochEnded
from squeezer.recipe import recipe_from_dict

pytest.importorskip("squeezer_lsq")


def recipe(student_distills: str, out: Path) -> object:
    return recipe_from_dict({
        "seed": 0, "device": "cpu", "output_dir": str(out),
        "model": {"factory": "squeezer.examples.digits:make_model", "width": 4},
        "data": {"factory": "squeezer.examples.digits:make_loaders", "batch_size": 256},
        "training": {"lr": 0.003},
        "stages": [
            {"type": "train", "epochs": 1},
            {"type": "prune", "scheduler": {"name": "one_shot", "target": 0.5},
             "quantizer": {"name": "lsq", "bits": 4}, "epochs_per_round": 1},
            {"type": "mutual", "warmup_epochs": 0, "epochs": 2, "student_distills": student_distills},
        ],
    }, source="gate.toml")


def test_the_gate_reaches_the_mutual_stage_and_reports_how_often_it_opened(tmp_path: Path) -> None:
    shares: dict[str, list[float]] = {}
    accuracy: dict[str, float] = {}
    for mode in ("always", "when_teacher_leads"):
        seen: list[float] = []
        result = squeezer.run(recipe(mode, tmp_path / mode), out=tmp_path / mode, overwrite=True, export=False,
                              sink=lambda e, seen=seen: seen.append(e.extra["student_kd_on"])
                              if isinstance(e, EpochEnded) and "student_kd_on" in e.extra else None)
        shares[mode], accuracy[mode] = seen, result.accuracy
    assert shares["always"] == [1.0, 1.0]
    gated = shares["when_teacher_leads"]
    assert len(gated) == 2 and all(0.0 <= s <= 1.0 for s in gated)
    # at 50 % the teacher (twice the weights) leads on every batch here: the gate stays open, and
    # the run is the ungated one exactly
    assert gated == [1.0, 1.0] and accuracy["when_teacher_leads"] == accuracy["always"]
