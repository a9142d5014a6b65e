"""Which weights get compressed: by module type and by name patterns, without tracing.

Names are matched with shell-style globs (``fnmatch``) on the module path (``features.0``) or,
for ``parameters``, on the full parameter path (``encoder.layers.0.self_attn.in_proj_weight``).
Wrapper prefixes (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``) are ignored when matching.

torch is imported only by the functions that walk a model: :class:`Targets` is a recipe section,
and validating a recipe imports no torch.
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Any

import attrs

from squeezer.errors import TargetError

if TYPE_CHECKING:
    from torch import nn

#: the matrix weights of common architectures: Hugging Face's ``Conv1D`` (GPT-2's layers, a
#: transposed Linear) and ``nn.MultiheadAttention``'s input projection (its output projection is a Linear)
DEFAULT_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d", "RNNBase", "RNNCellBase", "MultiheadAttention", "Conv1D")
_RNN_WEIGHT = re.compile(r"weight_(ih|hh|hr)(_l\d+(_reverse)?)?")  # nn.LSTM's weight_ih_l0, nn.GRUCell's weight_hh
_MHA_WEIGHT = re.compile(r"in_proj_weight|[qkv]_proj_weight")  # packed, or separate when kdim/vdim differ
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@attrs.frozen(kw_only=True)
class Targets:
    """Which parameters to compress."""

    types: tuple[str, ...] = attrs.field(
        default=DEFAULT_TYPES, converter=_str_tuple,
        metadata={"help": "module class names (or base class names) whose weights are compressed: `weight`, an "
                          "RNN's `weight_ih_l*`/`weight_hh_l*` (RNNBase: RNN, LSTM, GRU; RNNCellBase: their cells), or "
                          "MultiheadAttention's `in_proj_weight` (Conv1D: Hugging Face's GPT-2 layers)"},
    )
    include: tuple[str, ...] = attrs.field(
        default=("*",), converter=_str_tuple,
        metadata={"help": "glob patterns on module names; a module must match one"},
    )
    exclude: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple,
        metadata={"help": "glob patterns on module or parameter names to leave alone"},
    )
    parameters: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple,
        metadata={"help": "extra glob patterns on full parameter names (e.g. '*.in_proj_weight')"},
    )


@attrs.frozen
class Skipped:
    """A parameter-holding module left uncompressed, and why."""

    name: str
    reason: str


@attrs.frozen
class Resolution:
    """The outcome of targeting: parameter paths to compress, and what was skipped."""

    targets: tuple[str, ...]
    skipped: tuple[Skipped, ...]


def strip_wrappers(name: str) -> str:
    """``module._orig_mod.fc`` -> ``fc``: names match the same with or without wrappers."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def _application_order(attr: str) -> tuple[int, int, int, str]:
    """Sort key of a module's parameters: an RNN's weights in the order it applies them (layer,
    direction, input before hidden before projection), so ``@first`` is ``weight_ih_l0``, the one
    that reads the raw input; every other name alphabetical after them."""
    match = _RNN_WEIGHT.fullmatch(attr)
    if match is None:
        return (1, 0, 0, attr)
    layer = int(match.group(2)[2:].removesuffix("_reverse")) if match.group(2) else 0
    return (0, 2 * layer + bool(match.group(3)), ("ih", "hh", "hr").index(match.group(1)), attr)


def _type_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _matches(name: str, patterns: tuple[str, ...]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def _excluded(path: str, patterns: tuple[str, ...]) -> str | None:
    """The pattern of ``exclude`` that matches the parameter ``path`` or its module, if any."""
    return _matches(_owner_and_attr(path)[0], patterns) or _matches(path, patterns)


def _owner_and_attr(path: str) -> tuple[str, str]:
    module, _, attr = path.rpartition(".")
    return module, attr


def resolve(model: nn.Module, targets: Targets) -> Resolution:
    """Resolve ``targets`` on ``model``; raises :class:`TargetError` if nothing matches."""
    from torch import nn
    from torch.nn.utils.parametrize import ParametrizationList

    rnns = (nn.RNNBase, nn.RNNCellBase)
    mha = nn.MultiheadAttention
    chosen: list[str] = []
    skipped: list[Skipped] = []
    for raw_name, module in model.named_modules():
        if isinstance(module, ParametrizationList):  # holds a parametrized weight's originals: seen at its owner
            continue
        name = strip_wrappers(raw_name)
        own = {n for n, _ in module.named_parameters(recurse=False)}
        plist = getattr(module, "parametrizations", None)
        if plist is not None:  # already parametrized: the parameter lives under its original name
            own |= set(plist.keys())
            own -= {"parametrizations"}
        if not own:
            continue
        label = name or "<root>"
        weights = {a for a in own if a == "weight" or (isinstance(module, rnns) and _RNN_WEIGHT.fullmatch(a))
                   or (isinstance(module, mha) and _MHA_WEIGHT.fullmatch(a))}
        by_type = bool(_type_names(module) & set(targets.types)) and bool(weights)
        for attr in sorted(own, key=_application_order):
            path = f"{name}.{attr}" if name else attr
            raw_path = f"{raw_name}.{attr}" if raw_name else attr
            by_param = _matches(path, targets.parameters)
            if not (by_type and attr in weights) and not by_param:
                continue
            excluded = _excluded(path, targets.exclude)
            foreign = _foreign_parametrization(plist, attr)
            if excluded:
                skipped.append(Skipped(label, f"excluded by pattern {excluded!r}"))
            elif foreign:
                skipped.append(Skipped(label, f"{attr} already has a parametrization ({foreign}, e.g. weight_norm); "
                                              "it is left uncompressed"))
            elif not by_param and not _matches(name, targets.include):
                skipped.append(Skipped(label, f"not matched by include {list(targets.include)}"))
            else:
                chosen.append(raw_path)
        legacy_norm = hasattr(module, "weight_g") and hasattr(module, "weight_v")
        if legacy_norm and bool(_type_names(module) & set(targets.types)):
            skipped.append(Skipped(label, "weight is computed by the legacy weight_norm hook (weight_g, weight_v); "
                                          "it is left uncompressed"))
        elif not by_type and not any(_matches(f"{name}.{a}", targets.parameters) for a in own):
            skipped.append(Skipped(label, f"type {type(module).__name__} not targeted"))
    tied = _tied_names(model)
    for path in list(chosen):  # a weight tied to an excluded path is not compressed at its other paths
        held_back = [n for n in tied.get(path, ()) if _excluded(strip_wrappers(n), targets.exclude)]
        if held_back:
            chosen.remove(path)
            owner, attr = _owner_and_attr(strip_wrappers(path))
            skipped.append(Skipped(owner or "<root>", f"{attr} is tied to {', '.join(held_back)}, which is "
                                                      "excluded: it is left uncompressed"))
    if not chosen:
        why = [f"{s.name}: {s.reason}" for s in skipped if s.reason.endswith("left uncompressed")][:3]
        raise TargetError(
            f"targets matched no parameter (types={list(targets.types)}, include={list(targets.include)}, "
            f"exclude={list(targets.exclude)}, parameters={list(targets.parameters)})"
            + (f"; skipped {'; '.join(why)}" if why else "")
        )
    return Resolution(tuple(dict.fromkeys(chosen)), tuple(skipped))


def _tied_names(model: nn.Module) -> dict[str, list[str]]:
    """Every name of each parameter that has several (tied weights, a module used twice)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name.replace(".parametrizations.", ".").removesuffix(".original")
                                           if name.endswith(".original") else name)
    return {n: group for group in names.values() if len(group) > 1 for n in group}


def _foreign_parametrization(plist: Any, attr: str) -> str:
    """The names of parametrizations on ``attr`` that are not squeezer's own (empty if none)."""
    from squeezer.compress.weight import CompressedWeight

    if plist is None or attr not in plist:
        return ""
    foreign = [type(p).__name__ for p in plist[attr] if not isinstance(p, CompressedWeight)]
    return ", ".join(foreign)


def get_submodule_and_attr(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """Split a parameter path into its owning module and attribute name."""
    module_path, attr = _owner_and_attr(path)
    return (model.get_submodule(module_path) if module_path else model), attr
