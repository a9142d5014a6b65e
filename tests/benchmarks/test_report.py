"""benchmarks/report.py: regenerating a results page keeps the sections a person wrote."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from report import keep_hand_written  # noqa: E402


def test_a_rerun_keeps_the_hand_written_sections_and_drops_the_old_tables(tmp_path: Path) -> None:
    page = tmp_path / "PAGE.md"
    page.write_text("# Title\n\n## table\nold numbers\n\n## Reading (written by hand for this run)\n"
                    "the analysis\n\n## another table\nold\n", encoding="utf-8")
    new = "# Title\n\n## table\nnew numbers\n"
    assert keep_hand_written(page, new) == (
        "# Title\n\n## table\nnew numbers\n\n## Reading (written by hand for this run)\nthe analysis\n")


def test_nothing_to_keep_returns_the_generated_text(tmp_path: Path) -> None:
    assert keep_hand_written(tmp_path / "absent.md", "# T\n") == "# T\n"
    page = tmp_path / "PAGE.md"
    page.write_text("# T\n## table\nold\n", encoding="utf-8")
    assert keep_hand_written(page, "# T\n## table\nnew\n") == "# T\n## table\nnew\n"
    # a generator that writes the section itself is not given a second copy
    page.write_text("# T\n## Notes (written by hand)\nx\n", encoding="utf-8")
    assert keep_hand_written(page, "# T\n## Notes (written by hand)\ny\n") == "# T\n## Notes (written by hand)\ny\n"


def _row(model: str, seed: int, dense_val: float, phase1_val: float, test: float) -> dict:
    return {"model": model, "seed": seed, "method": "pqk", "dense": {"val": dense_val},
            "stage_accuracy": {"0": dense_val, "1": phase1_val, "2": test},
            "student": {"train": 100.0, "val": test, "test": test}, "teacher_val": 90.0}


def test_suite_compare_pairs_only_runs_that_shared_their_start() -> None:
    from suite_compare import compare

    base = {("m", 0): _row("m", 0, 90.0, 91.0, 92.0), ("m", 1): _row("m", 1, 90.0, 91.0, 92.0)}
    cand = {("m", 0): _row("m", 0, 90.0, 91.0, 93.0), ("m", 1): _row("m", 1, 90.0, 91.5, 95.0)}
    through_dense = compare(base, cand, "dense")
    assert "+2.00 ± 1.41 | +1.00, +3.00" in through_dense and "Not comparable" not in through_dense
    through_phase1 = compare(base, cand, "phase1")  # seed 1's Phase 1 differs: not the change's doing
    assert "+1.00 ± 0.00 | +1.00 |" in through_phase1
    assert "Not comparable" in through_phase1 and "m seed 1" in through_phase1
