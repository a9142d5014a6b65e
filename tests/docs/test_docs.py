"""The documentation cannot rot: generated pages are current, hooks are documented and tested,
every Python block in docs/*.md runs, files quoted from the example plugin match it, and the
site builds with ``mkdocs build --strict``.

Markers (an HTML comment on the line before a fenced block):

- ``<!-- skip -->``: the block is not run;
- ``<!-- write: NAME -->``: the block is written to ``NAME`` in the page's working directory
  (a temporary directory, on ``sys.path``) instead of being run, for later blocks to use;
- ``<!-- same-as: PATH -->``: the block must equal the repository file ``PATH``.

The Python blocks of a page run in order in one namespace; ``docs/examples/squeezer-taylor`` is on
``sys.path`` so that the plugin tutorial's blocks can import the example plugin.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

import squeezer
from squeezer import hookspecs
from squeezer.plugin_manager import make_plugin_manager
from squeezer.recipe import parse_recipe
from squeezer.registry import KIND_HOOKS, Registry

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLE = DOCS / "examples" / "squeezer-taylor"
PAGES = sorted(DOCS.glob("*.md"))
BUILTIN = {"magnitude", "schedules", "lsq", "distillation", "tasks"}
_MARKER = re.compile(r"^<!--\s*(skip|write:\s*(\S+)|same-as:\s*(\S+))\s*-->$")
_FENCE = re.compile(r"^```(\w*)\s*$")


class Block(NamedTuple):
    lang: str
    code: str
    line: int
    marker: str | None  # "skip", "write", "same-as"
    target: str | None


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        m = _MARKER.match(prev)
        marker = target = None
        if m:
            marker = m.group(1).split(":")[0]
            target = m.group(2) or m.group(3)
        yield Block(fence.group(1), "\n".join(lines[start + 1 : j]) + "\n", start + 1, marker, target)
        i = j + 1


def gen_ref() -> ModuleType:
    spec = importlib.util.spec_from_file_location("squeezer_docs_gen_ref", DOCS / "gen_ref.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_pages_are_current() -> None:
    for path, text in gen_ref().render().items():
        assert path.exists(), f"{path} missing: run python docs/gen_ref.py"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python docs/gen_ref.py"


@pytest.mark.parametrize("hook", sorted(gen_ref().hook_specs()))
def test_hook_documented_implemented_and_tested(hook: str) -> None:
    fn = getattr(hookspecs, hook)
    assert fn.__doc__ and "Since " in fn.__doc__, f"{hook}: docstring must document it, with its version"
    assert f"## `{hook}`" in (DOCS / "reference" / "hooks.md").read_text(encoding="utf-8")
    # a built-in plugin implements it, and calling the hook registers strategies of its kind
    pm = make_plugin_manager(autoload=False)
    impls = getattr(pm.hook, hook).get_hookimpls()
    assert BUILTIN & {impl.plugin_name for impl in impls}, f"{hook}: no built-in plugin implements it"
    kind = next(k for k, h in KIND_HOOKS.items() if h == hook)
    registry = Registry()
    getattr(pm.hook, hook)(registry=registry)
    assert registry.names(kind), f"{hook}: calling it registered no {kind}"
    # the test suite exercises it: by name, or through the conformance check of its kind
    needles = (hook, f"check_{kind}(")
    tests = [p for p in (ROOT / "tests").rglob("test_*.py") if "docs" not in p.relative_to(ROOT / "tests").parts]
    assert any(n in p.read_text(encoding="utf-8") for p in tests for n in needles), f"{hook}: no test exercises it"


def test_every_hook_spec_is_in_kind_hooks() -> None:
    assert set(gen_ref().hook_specs()) == set(KIND_HOOKS.values())


def test_index_quickstart_matches_readme() -> None:
    readme = [b.code for b in blocks(ROOT / "README.md") if b.lang == "bash"]
    index = [b.code for b in blocks(DOCS / "index.md") if b.lang == "bash"]
    assert readme and readme[:2] == index[:2]


def test_quoted_files_match_the_example_plugin() -> None:
    quoted = [(page, b) for page in PAGES for b in blocks(page) if b.marker == "same-as"]
    assert quoted
    for page, b in quoted:
        assert b.target is not None
        expected = (ROOT / b.target).read_text(encoding="utf-8")
        assert b.code == expected, f"{page.name}:{b.line}: block differs from {b.target}"


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.lang == "python" for b in blocks(p))],
                         ids=lambda p: p.name)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for b in blocks(page):
            if b.marker == "write":
                assert b.target is not None
                (tmp_path / b.target).write_text(b.code, encoding="utf-8")
            elif b.lang == "python" and b.marker is None:
                exec(compile(b.code, f"{page.name}:{b.line}", "exec"), namespace)
    finally:
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith((str(tmp_path), str(EXAMPLE))):
                del sys.modules[name]


def test_written_recipes_validate(tmp_path: Path) -> None:
    registry = squeezer.load_registry(autoload=False)
    for page in PAGES:
        for b in blocks(page):
            if b.marker == "write" and b.lang == "toml":
                parse_recipe(b.code, source=f"{page.name}:{b.line}", registry=registry)


def test_skipped_blocks_are_few() -> None:
    skipped = [(p.name, b.line) for p in PAGES for b in blocks(p) if b.marker == "skip"]
    assert len(skipped) <= 3, skipped


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
