"""What touches no tensor imports no torch (issue 15): validating, showing and documenting recipes,
listing plugins, loading the registry and recipes. Each check runs in a fresh interpreter, since
this test process has imported torch long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pytest

RECIPES = sorted(p.name for p in resources.files("squeezer").joinpath("recipes").iterdir() if p.name.endswith(".toml"))

# runs `code` and prints, as its last line, the exit code (if the code sets `code`) and the torch modules loaded
HARNESS = """
import json, sys
code = None
{code}
print(json.dumps({{"code": code, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}}))
"""

CLI = """
import contextlib, io
from squeezer.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main({argv!r})
    except SystemExit as exc:
        code = exc.code
assert out.getvalue(), "the command printed nothing"
"""


def fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; its exit code and the torch modules it imported."""
    proc = subprocess.run([sys.executable, "-c", HARNESS.format(code=code)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def recipe_path(name: str) -> str:
    return str(resources.files("squeezer").joinpath("recipes", name))


def test_every_bundled_recipe_is_checked() -> None:
    assert "pqk.toml" in RECIPES and len(RECIPES) >= 5


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_validate_imports_no_torch(name: str) -> None:
    assert fresh(CLI.format(argv=["recipe", "validate", recipe_path(name)])) == {"code": 0, "torch": []}


@pytest.mark.parametrize("argv", [
    ["recipe", "show", "pqk.toml"],
    ["recipe", "show", "--json", "pqk.toml"],
    ["recipe", "schema"],
    ["recipe", "schema", "--json"],
    ["plugins", "list"],
    ["--version"],
], ids=" ".join)
def test_cli_commands_without_tensors_import_no_torch(argv: list[str]) -> None:
    argv = [recipe_path(a) if a.endswith(".toml") else a for a in argv]
    assert fresh(CLI.format(argv=argv)) == {"code": 0, "torch": []}


def test_registry_and_recipes_import_no_torch() -> None:
    code = f"""
import squeezer
from squeezer.recipe import check_strategies, load_recipe, recipe_to_dict
registry = squeezer.load_registry()
assert {{info.kind for info in registry}} >= {{"importance", "scheduler", "quantizer", "distillation_loss"}}
recipe = load_recipe({recipe_path("pqk.toml")!r}, registry=registry)
check_strategies(recipe, registry)
recipe_to_dict(recipe)
squeezer.load_recipe({recipe_path("kd.toml")!r})
"""
    assert fresh(code)["torch"] == []


def test_targets_import_no_torch() -> None:
    """``Targets`` is a recipe section: importing it, from any of its public homes, imports no torch."""
    code = """
import squeezer, squeezer.compress
from squeezer.compress import Resolution, Skipped, Targets
from squeezer.compress.targets import DEFAULT_TYPES
assert squeezer.Targets is Targets and squeezer.compress.Targets is Targets
assert Targets(types="Linear").types == ("Linear",) and Targets().types == DEFAULT_TYPES
"""
    assert fresh(code)["torch"] == []


def test_the_tensor_api_still_loads_on_first_use() -> None:
    """The lazy ``squeezer.compress``: a tensor name imports torch when used, and submodules still import."""
    code = """
import squeezer.compress as compress
from squeezer.compress import attach, bitmask, compressed_weights
from squeezer.compress.model import attach as attach_in_model
assert attach is attach_in_model and compress.attach is attach and callable(compressed_weights)
assert bitmask.__name__ == "squeezer.compress.bitmask"
assert all(hasattr(compress, name) for name in compress.__all__)
"""
    assert "torch" in fresh(code)["torch"]
