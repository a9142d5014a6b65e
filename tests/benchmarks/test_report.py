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
