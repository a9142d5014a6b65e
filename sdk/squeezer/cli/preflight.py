"""Checks the CLI makes before anything runs, without importing torch or the user's code:

- the recipe's factories can be found (the module on the import path, the function defined in its
  source), with errors that say what is importable and where a file next to the recipe is;
- the output directory may be used (checked before ``--nproc`` launches its ranks, so a refusal is
  one line from one process instead of one per rank and a launcher traceback).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from squeezer.errors import ConfigError


def factories(recipe: Any) -> list[tuple[str, str]]:
    """``(recipe field, 'module:function')`` of every factory the recipe names."""
    found = [("model.factory", recipe.model.factory), ("data.factory", recipe.data.factory)]
    for i, stage in enumerate(recipe.stages):
        student = getattr(stage, "student", None)
        if student is not None:
            found.append((f"stages[{i}].student.factory", student.factory))
    return found


def importable_here() -> str:
    """What a factory may be imported from (as :mod:`squeezer.factories` sets it up)."""
    return f"only the current directory ({os.getcwd()}) and installed packages are importable"


def check_factories(recipe: Any, recipe_path: Path | None = None) -> list[str]:
    """Find every factory of ``recipe`` without running any code of the user's; return the
    factories found. A module that cannot be found, or whose source defines no such function,
    is a :class:`ConfigError` naming the field. Parent packages of a dotted module are imported
    (as Python must, to find the module); the module itself is only read."""
    checked = []
    for field, path in factories(recipe):
        module_name, _, attr = path.partition(":")
        spec = _find_spec(module_name, field, path, recipe, recipe_path)
        _check_defined(spec, module_name, attr, field, recipe)
        checked.append(path)
    return checked


def _find_spec(module_name: str, field: str, path: str, recipe: Any, recipe_path: Path | None) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # as squeezer.factories does before importing a factory
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        spec = None
    except Exception as exc:  # a parent package that fails to import
        raise ConfigError(f"{recipe.source}: {field}: importing the parents of {module_name!r} raised "
                          f"{type(exc).__name__}: {exc}") from None
    if spec is not None:
        return spec
    hint = importable_here()
    top = module_name.split(".")[0]
    if recipe_path is not None:
        here = Path(recipe_path).resolve().parent
        if here != Path(cwd).resolve() and ((here / f"{top}.py").is_file() or (here / top).is_dir()):
            hint += f"; {top} is next to the recipe: run squeezer from {here} (cd there), or install it"
    raise ConfigError(f"{recipe.source}: {field}: cannot find module {module_name!r} (of {path!r}); {hint}")


def _check_defined(spec: Any, module_name: str, attr: str, field: str, recipe: Any) -> None:
    """The function's first name must be defined at the top of the module's source, when the
    source can be read and defines its names statically (no ``import *``, no module ``__getattr__``)."""
    origin = getattr(spec, "origin", None)
    if not isinstance(origin, str) or not origin.endswith(".py") or not os.path.isfile(origin):
        return  # a namespace package, an extension module, a zip: not checked
    try:
        with open(origin, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=origin)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return  # importing it will tell (with the real error)
    names = _top_level_names(tree.body)
    if names is None:
        return
    if "__getattr__" in names:
        return
    first = attr.split(".")[0]
    if first not in names:
        public = sorted(n for n in names if not n.startswith("_"))
        close = difflib.get_close_matches(first, public, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{recipe.source}: {field}: module {module_name!r} ({origin}) defines no {first!r}{hint}")


def _top_level_names(body: list[ast.stmt]) -> set[str] | None:
    """The names statements at a module's top define (in any branch of an ``if``/``try``/``with``);
    ``None`` when they may define names that reading cannot tell (``import *``, loops, ``exec``...)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            continue  # if __name__ == "__main__": runs only as a script
        elif isinstance(node, ast.If | ast.Try | ast.With):
            branches = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            branches += [h.body for h in getattr(node, "handlers", [])]
            for branch in branches:
                inner = _top_level_names(branch)
                if inner is None:
                    return None
                names |= inner
        elif isinstance(node, ast.Expr | ast.Pass):
            called = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if called & {"globals", "setattr", "exec", "vars", "locals"}:
                return None  # names made at import time: too dynamic to judge
        else:
            return None
    return names


def check_output_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """What the run itself would refuse about ``out_dir`` (see :func:`squeezer.pipeline.run`)."""
    from squeezer.pipeline.outdir import CHECKPOINT_DIR, CHECKPOINT_NAME, has_user_content

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: output path exists and is not a directory")
    if resume:
        if not (out_dir / CHECKPOINT_DIR / CHECKPOINT_NAME).exists():
            raise ConfigError(f"{out_dir}: nothing to resume (no {CHECKPOINT_DIR}/{CHECKPOINT_NAME})")
    elif has_user_content(out_dir) and not overwrite:
        raise ConfigError(
            f"{out_dir}: output directory is not empty; pass --resume to continue or --overwrite to replace it"
        )


__all__ = ["check_factories", "check_output_dir", "factories", "importable_here"]
