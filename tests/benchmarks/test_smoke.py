"""The benchmark scripts still run (tiny budgets, results written to a temporary folder, never to
benchmarks/results/): an API change must not silently break them, as one once broke cost.py.
quantizers.py and scale.py have no small mode or --out, and kws.py's smallest run takes about
100 s (its recipe runs end to end in tests/examples/test_kws.py), so they are not run here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

SMOKE = {
    "cost": ["--steps", "2", "--warmup", "1", "--models", "digits16", "--profile-steps", "1"],
    "accuracy": ["--seeds", "1", "--epochs-scale", "0.03", "--configs", "0.9:4"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_runs(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *SMOKE[name], "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(out.read_text(encoding="utf-8"))
