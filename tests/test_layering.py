"""The package's layering, checked over its import graph (every import, lazy ones included).

Layers, lowest first; a module may import its own layer and those below, never above:

    0  errors, contracts, trust, registry, hookspecs, safefile, atomic, strategies, examples  (no squeezer
       imports above)
    1  compress (tensor code: masks, quantizer wrappers), plugin_manager
    2  recipe (frozen configs)
    3  factories, artifact, engine (the compression rules every driver applies)
    4  pipeline (stages, the loop, checkpoints)
    5  session, integrations (drivers of the pipeline's machinery)
    6  cli
    7  testing, the package root (the public facade), __main__

Besides: rich and typer only in the CLI (and the testing kit's CLI runner); no squeezer module
imports a built-in plugin (they register through entry points, as a third party would).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parent.parent / "sdk"
RANK = {
    "errors": 0, "contracts": 0, "trust": 0, "registry": 0, "hookspecs": 0, "safefile": 0, "atomic": 0, "strategies": 0,
    "examples": 0,
    "compress": 1, "plugin_manager": 1,
    "recipe": 2,
    "factories": 3, "artifact": 3, "engine": 3,
    "pipeline": 4,
    "session": 5, "integrations": 5,
    "cli": 6,
    "testing": 7, "": 7, "__main__": 7,
}
UI = ("rich", "typer", "click")
BUILTIN_PLUGINS = ("squeezer_magnitude", "squeezer_lsq", "squeezer_distill", "squeezer_schedules", "squeezer_tasks")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((SDK / "squeezer").rglob("*.py")):
        parts = path.relative_to(SDK).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__"), path


def imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])]), node.lineno
            elif node.module:
                yield node.module, node.lineno


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations() -> list[str]:
    found = []
    for module, path in modules():
        own = layer(module)
        assert own in RANK, f"{module}: add its layer {own!r} to RANK (and to the docstring)"
        for target, line in imports(path, module):
            top = target.split(".")[0]
            where = f"{path.relative_to(SDK)}:{line}: {module} imports {target}"
            if top in UI and own not in ("cli", "testing"):
                found.append(f"{where} (rich/typer only in the CLI)")
            elif top in BUILTIN_PLUGINS:
                found.append(f"{where} (built-in plugins load through entry points)")
            elif top == "squeezer" and target != "squeezer":
                other = layer(target)
                if other in RANK and RANK[other] > RANK[own]:
                    found.append(f"{where} (layer {own} ({RANK[own]}) may not import {other} ({RANK[other]}))")
    return found


def test_the_layering_holds() -> None:
    assert violations() == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: a compress module importing the pipeline, or rich, is reported."""
    fake = tmp_path / "sdk"
    (fake / "squeezer" / "compress").mkdir(parents=True)
    (fake / "squeezer" / "compress" / "bad.py").write_text(
        "def f():\n    from squeezer.pipeline import loop\n    import rich\n    from . import masks\n")
    monkeypatch.setitem(globals(), "SDK", fake)
    found = violations()
    assert len(found) == 2, found
    assert "may not import pipeline" in found[0] and "rich/typer only in the CLI" in found[1]
