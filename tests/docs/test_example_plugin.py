"""The example third-party plugin in docs/examples/squeezer-taylor, installed the way a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "squeezer-taylor"
DIST = "squeezer-taylor"

RECIPE = """
[model]
factory = "squeezer.examples.digits:make_model"
width = 4

[data]
factory = "squeezer.examples.digits:make_loaders"

[[stages]]
type = "train"
epochs = 1

[[stages]]
type = "prune"
importance = "taylor"
scheduler = { name = "geometric", target = 0.5, rounds = 2 }
quantizer = { name = "lsq", bits = 4 }
epochs_per_round = 1
calibration_batches = 2

[[stages]]
type = "mutual"
distillation = { name = "cosine", temperature = 2.0 }
warmup_epochs = 0
epochs = 1
"""


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return _run("-m", "pip", *args, "--disable-pip-version-check", "-q")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private site directory with the example installed by pip (``--target``): the test
    environment itself is never modified, so concurrent tests and sessions cannot see a
    distribution half installed or half removed."""
    # build from a copy: pip writes build/ and *.egg-info next to the sources
    root = tmp_path_factory.mktemp("example")
    project, target = root / "squeezer-taylor", root / "site"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    result = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(project))
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture
def installed(site: Path) -> Path:
    """The example's sources (its tests included)."""
    return site.parent / "squeezer-taylor"


@pytest.fixture
def autoload_env(site: Path) -> dict[str, str]:
    unset = ("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "SQUEEZER_BLOCK_PLUGINS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def test_listed_by_the_cli(installed: Path, autoload_env: dict[str, str]) -> None:
    out = _run("-m", "squeezer", "plugins", "list", "--json", env=autoload_env)
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    taylor = {e["name"]: e for e in listing["importance"]}["taylor"]
    assert taylor["plugin"] == "taylor" and taylor["version"] == f"{DIST} 0.1.0"
    assert taylor["help"].startswith("First-order Taylor")
    assert "cosine" in {e["name"] for e in listing["distillation_loss"]}


@pytest.mark.slow
def test_recipe_selecting_taylor_runs_end_to_end(installed: Path, autoload_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    recipe = tmp_path / "taylor.toml"
    recipe.write_text(RECIPE)
    out = _run("-m", "squeezer", "run", str(recipe), "--out", str(tmp_path / "out"), "--json",
               env=autoload_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_its_own_tests_pass(installed: Path, autoload_env: dict[str, str]) -> None:
    out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(installed / "tests"), env=autoload_env,
               cwd=installed)
    assert out.returncode == 0, out.stdout + out.stderr
