"""The real third-party path: a plugin distribution pip-installed into this environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DIST = "squeezer-myplug-testonly"
VERSION = "0.3.1"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "{VERSION}"
requires-python = ">=3.11"

[project.entry-points.squeezer]
myplug = "squeezer_myplug"

[tool.setuptools]
py-modules = ["squeezer_myplug"]
"""

MODULE = '''
"""A third-party squeezer plugin: negative magnitude (prunes the largest weights first)."""
import attrs
from squeezer import hookimpl


@attrs.frozen(kw_only=True)
class NegMagnitude:
    """Negative magnitude."""

    needs_gradients = False
    power: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))

    def __call__(self, weight, grad=None):
        return -weight.detach().abs().float() ** self.power


@hookimpl
def squeezer_register_importances(registry):
    registry.add_importance("negmag", NegMagnitude)
'''

CHECK = """
import json, torch, squeezer
from squeezer.plugin_manager import plugin_version

registry = squeezer.load_registry()
info = registry.get("importance", "negmag")
imp = registry.create("importance", "negmag", {"power": 2.0})
score = imp(torch.tensor([1.0, -3.0]))
off = squeezer.load_registry(autoload=False).names("importance")
print(json.dumps({"plugin": info.plugin, "version": info.version, "pv": plugin_version("myplug"),
                  "score": score.tolist(), "off": off}))
"""


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Path:
    """A private site directory with the plugin installed by pip (``--target``): the test
    environment itself is never modified."""
    project, target = tmp_path / "myplug", tmp_path / "site"
    project.mkdir()
    (project / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (project / "squeezer_myplug.py").write_text(MODULE)
    result = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(project))
    assert result.returncode == 0, result.stderr
    return target


def test_third_party_plugin_installed_with_pip(installed_plugin: Path) -> None:
    unset = ("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "SQUEEZER_BLOCK_PLUGINS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(installed_plugin), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["plugin"] == "myplug"
    assert got["version"] == got["pv"] == f"{DIST} {VERSION}"
    assert got["score"] == [-1.0, -9.0]
    assert "negmag" not in got["off"]  # third-party autoload off: only squeezer's own plugins
    # blocked by name from the environment
    blocked = subprocess.run(
        [sys.executable, "-c", "import squeezer; print(squeezer.load_registry().names('importance'))"],
        capture_output=True, text=True, env={**env, "SQUEEZER_BLOCK_PLUGINS": "myplug"}, timeout=120,
    )
    assert blocked.returncode == 0, blocked.stderr
    assert "negmag" not in blocked.stdout
