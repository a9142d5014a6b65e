"""Operations on a user's model: attach masks, prune, attach quantizers, report, detach."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezer.compress.selection import global_masks, layer_mask
from squeezer.compress.targets import Resolution, Targets, get_submodule_and_attr, resolve
from squeezer.compress.weight import CompressedWeight, compressed_weights, weight_aliases
from squeezer.errors import ArtifactError, PluginError, SqueezerError, TargetError


def attach(model: nn.Module, targets: Targets | None = None) -> Resolution:
    """Parametrize every targeted weight of ``model`` with a (dense) :class:`CompressedWeight`.

    Idempotent: weights already compressed are left as they are.
    """
    resolution = resolve(model, targets or Targets())
    attach_paths(model, resolution.targets)
    return resolution


def attach_paths(model: nn.Module, paths: Sequence[str]) -> None:
    """Parametrize the weights at the given parameter paths (see :func:`attach`).

    A tied weight (one parameter at several paths) is compressed once: one
    :class:`CompressedWeight` (one mask, one quantizer) is registered at every path that holds it,
    so every module that uses it sees the same student weight.
    """
    done = {path for path, _ in compressed_weights(model)}
    done |= {alias for aliases in weight_aliases(model).values() for alias in aliases}
    for path in paths:
        if path in done:
            continue
        module, attr = get_submodule_and_attr(model, path)
        weight = getattr(module, attr)
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise TargetError(f"{path}: only floating-point weights can be compressed, got {weight.dtype}")
        shared = CompressedWeight(weight)
        for alias in parameter_paths(model, weight):
            owner, name = get_submodule_and_attr(model, alias)
            if parametrize.is_parametrized(owner, name):
                raise TargetError(f"{path}: the weight is tied to {alias}, which already has a parametrization")
            parametrize.register_parametrization(owner, name, shared, unsafe=True)
            _cache_within_forward(owner)
            _copyable_rnn(owner)
            done.add(alias)


def parameter_paths(model: nn.Module, weight: torch.Tensor) -> list[str]:
    """Every path at which ``model`` holds the parameter ``weight`` (several when it is tied), in
    module order; a module registered under two names counts once (its first name)."""
    paths: list[str] = []
    seen: set[tuple[int, str]] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is weight and (id(module), attr) not in seen:
                seen.add((id(module), attr))
                paths.append(f"{module_name}.{attr}" if module_name else attr)
    return paths


def tie(model: nn.Module, path: str, aliases: Sequence[str]) -> None:
    """Make each path in ``aliases`` hold the parameter at ``path`` (a tie a model lacks is made;
    one it has is left as it is). Raises a :class:`TargetError` naming a path that does not fit."""
    module, attr = get_submodule_and_attr(model, path)
    shared = getattr(module, attr, None)
    for alias in aliases:
        try:
            owner, name = get_submodule_and_attr(model, alias)
        except AttributeError:
            raise TargetError(f"{alias}: the model has no such module (it should be tied to {path})") from None
        current = getattr(owner, name, None)
        if current is shared:
            continue
        if not isinstance(current, nn.Parameter) or not isinstance(shared, nn.Parameter) \
                or current.shape != shared.shape:
            raise TargetError(f"{alias}: cannot be tied to {path} (it must be a parameter of the same shape)")
        setattr(owner, name, shared)


def _copyable_rnn(module: nn.Module) -> None:
    """Let ``copy.deepcopy`` copy an RNN whose weights are compressed.

    ``nn.RNNBase`` caches its weights in ``_flat_weights``; with parametrized weights the list
    holds computed (non-leaf) tensors, which deepcopy refuses. The class
    ``register_parametrization`` made for ``module`` copies without them and rebuilds the
    copy's cache from its own parametrizations.
    """
    cls = type(module)
    if not isinstance(module, nn.RNNBase) or cls.__dict__.get("_squeezer_copyable_rnn", False):
        return
    inner = cls.__deepcopy__  # type: ignore[attr-defined]  # parametrize's default_deepcopy

    def __deepcopy__(self: nn.RNNBase, memo: dict[int, Any]) -> nn.RNNBase:
        if id(self) in memo:
            return memo[id(self)]
        cached = self._flat_weights
        self._flat_weights = [None if parametrize.is_parametrized(self, name) else w
                              for name, w in zip(self._flat_weights_names, cached, strict=True)]
        try:
            replica: nn.RNNBase = inner(self, memo)
        finally:
            self._flat_weights = cached
        replica._init_flat_weights()
        return replica

    cls.__deepcopy__ = __deepcopy__  # type: ignore[attr-defined]
    cls._squeezer_copyable_rnn = True  # type: ignore[attr-defined]


def _cache_within_forward(module: nn.Module) -> None:
    """Compute each compressed weight of ``module`` at most once per call of its forward.

    Some modules read a weight several times per forward: ``nn.MultiheadAttention`` reads
    ``in_proj_weight`` three times in training (twice in its fast-path checks), and each read
    would run the mask and the quantizer again. The class ``register_parametrization`` made for
    ``module`` gets a forward that runs in :func:`torch.nn.utils.parametrize.cached`, so the
    reads share one value (one autograd node) for the duration of the call. No hook is used:
    forward hooks on a submodule would disable ``nn.TransformerEncoderLayer``'s fast path.
    Removing the last parametrization restores the original class (and forward).
    """
    cls = type(module)
    if cls.__dict__.get("_squeezer_cached_forward", False):
        return
    inner = cls.forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # caching refuses tracing
            return inner(self, *args, **kwargs)
        with parametrize.cached():
            return inner(self, *args, **kwargs)

    cls.forward = forward
    cls._squeezer_cached_forward = True  # type: ignore[attr-defined]


def original(model: nn.Module, path: str) -> torch.Tensor:
    """The stored (full, unmasked) tensor behind a compressed weight."""
    module, attr = get_submodule_and_attr(model, path)
    plist: Any = module.parametrizations
    result: torch.Tensor = plist[attr].original
    return result


def check_finite(model: nn.Module) -> None:
    """Raise a :class:`TargetError` naming the first compressed weight holding NaN or Inf."""
    for path, _ in compressed_weights(model):
        w = original(model, path)
        if not torch.isfinite(w).all():
            raise TargetError(f"{path}: weight contains NaN or Inf; cannot rank it for pruning")


ScoreFn = Callable[[str, torch.Tensor], torch.Tensor]


@attrs.frozen
class LayerSparsity:
    """Target versus achieved sparsity of one compressed weight, and how many of its rows (output
    channels, or a classifier's class rows: slices along dim 0) are pruned entirely."""

    name: str
    numel: int
    zeros: int
    target: float
    rows: int = 0
    empty_rows: int = 0

    @property
    def achieved(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


def prune(
    model: nn.Module,
    score: ScoreFn,
    sparsity: float | Mapping[str, float],
    *,
    scope: str = "global",
    min_density: float = 0.0,
    keep_rows: bool = False,
    source: str = "importance",
) -> list[LayerSparsity]:
    """Update every mask of ``model`` to ``sparsity`` by the scores ``score(path, weight)`` gives.

    ``scope="global"`` ranks all weights together (each layer keeps ``min_density``);
    ``scope="layer"`` prunes each layer to its own sparsity (a mapping may give per-layer values).
    ``keep_rows``: each row (output channel, unit, class) that has a weight left keeps its
    best-scored one, so no round empties a row. Pruned weights stay pruned. ``source`` names the
    strategy in contract errors.
    """
    check_finite(model)
    score = _guarded(score, source)
    params = dict(compressed_weights(model))
    if not params:
        raise TargetError("model has no compressed weights; attach targets first")
    # scores are computed (and checked) when the mask arithmetic reads them, one layer at a time,
    # so that only one layer's score tensor is alive besides the ranking buffer
    scores = _Scores(model, list(params), score, source)
    current = {path: p.mask for path, p in params.items()}
    if scope == "global":
        if not isinstance(sparsity, float | int):
            raise ValueError("global pruning takes one sparsity")
        # every score is read before the first mask is written: a bad score leaves the masks as they were
        global_masks(scores, current, float(sparsity), min_density, keep_rows=keep_rows, out=current)
        targets = dict.fromkeys(params, float(sparsity))
    elif scope == "layer":
        targets = {p: float(sparsity[p] if isinstance(sparsity, Mapping) else sparsity) for p in params}
        new = {p: layer_mask(scores[p], current[p], targets[p], keep_rows) for p in params}
        for path, p in params.items():
            p.mask.copy_(new[path])
    else:
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    return [_layer_sparsity(path, p.mask, targets[path]) for path, p in params.items()]


def _layer_sparsity(path: str, mask: torch.Tensor, target: float) -> LayerSparsity:
    rows = empty = 0
    if mask.dim() >= 2:
        rows = mask.shape[0]
        empty = int((~mask.reshape(rows, -1).any(dim=1)).sum())
    return LayerSparsity(path, mask.numel(), int((~mask).sum()), target, rows, empty)


class _Scores(Mapping[str, torch.Tensor]):
    """``path -> score(path, weight)``, computed and checked on each access (not cached)."""

    def __init__(self, model: nn.Module, paths: list[str], score: ScoreFn, source: str) -> None:
        self.model, self.paths, self.score, self.source = model, paths, score, source

    def __getitem__(self, path: str) -> torch.Tensor:
        w = original(self.model, path)
        with torch.no_grad():
            s = self.score(path, w)
        if not isinstance(s, torch.Tensor) or s.shape != w.shape or not s.is_floating_point():
            got = f"{tuple(s.shape)} {s.dtype}" if isinstance(s, torch.Tensor) else type(s).__name__
            raise PluginError(
                f"{self.source}: score for {path} must be a float tensor of shape {tuple(w.shape)}, got {got}"
            )
        if torch.isnan(s).any():
            raise PluginError(f"{self.source}: score for {path} contains NaN")
        return s

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _guarded(score: ScoreFn, source: str) -> ScoreFn:
    """``score`` with any exception but a SqueezerError turned into a PluginError naming ``source``."""

    def guarded(path: str, weight: torch.Tensor) -> torch.Tensor:
        try:
            return score(path, weight)
        except SqueezerError:
            raise
        except Exception as exc:
            raise PluginError(f"{source}: scoring {path} raised {type(exc).__name__}: {exc}") from exc

    return guarded


def attach_quantizers(
    model: nn.Module, choose: Callable[[str], tuple[str, Any] | None], *, source: str = "quantizer",
    on: bool = True,
) -> dict[str, int]:
    """Give each compressed weight the fake quantizer built by ``choose(path) -> (name, config)``.

    ``choose`` returns the registered quantizer name and its config, or None to leave a weight
    unquantized. The quantizer is built from the masked weight. The core checks its contract:
    output of the input's shape and dtype, and zero mapped to exactly zero. ``on=False`` leaves
    the quantizers pending until :func:`switch_on_quantizers`. Returns bits per quantized weight.
    """
    bits: dict[str, int] = {}
    for path, p in compressed_weights(model):
        choice = choose(path)
        if choice is None:
            continue
        name, config = choice
        fq = _checked_quantizer(model, path, p, name, config, source)
        p.set_quantizer(fq, {"name": name, "options": attrs.asdict(config)}, config, on=on)
        bits[path] = int(getattr(fq, "bits", 32))
    return bits


def switch_on_quantizers(model: nn.Module, *, source: str = "quantizer") -> dict[str, int]:
    """Switch on every pending quantizer, initialized in place from the weight as it is now
    (pruned): the module and its parameter objects stay, so an optimizer holding them keeps
    working. Returns bits per weight switched on."""
    bits: dict[str, int] = {}
    for path, p in compressed_weights(model):
        pending = p.fake_quantizer
        if pending is None or p.quantizer_on:
            continue
        assert p.quantizer_spec is not None
        name = p.quantizer_spec["name"]
        fresh = _checked_quantizer(model, path, p, name, p.quantizer_config, source)
        try:
            with torch.no_grad():
                pending.load_state_dict(fresh.state_dict())
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1].strip()
            raise PluginError(f"{source} {name!r}: the state of the quantizer for {path} must have the same "
                              f"shapes whatever the weight's values ({detail})") from None
        p.quantizer_on = True
        bits[path] = int(getattr(pending, "bits", 32))
    return bits


def _checked_quantizer(model: nn.Module, path: str, p: CompressedWeight, name: str, config: Any,
                       source: str) -> nn.Module:
    """``config.build`` on the masked weight at ``path``, after checking the quantizer contract."""
    where = f"{source} {name!r}"
    w = original(model, path).detach()
    masked = torch.where(p.mask, w, w.new_zeros(()))
    if not torch.isfinite(masked).all():
        raise TargetError(f"{path}: weight contains NaN or Inf; cannot quantize it")
    try:
        fq = config.build(masked)
        if not isinstance(fq, nn.Module):
            raise PluginError(f"{where}: build() for {path} must return an nn.Module, got {type(fq).__name__}")
        with torch.no_grad():
            out = fq(masked)
            zero_out = fq(torch.zeros_like(masked))
    except SqueezerError:
        raise
    except Exception as exc:
        raise PluginError(f"{where}: quantizer for {path} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or not isinstance(zero_out, torch.Tensor):
        raise PluginError(f"{where}: quantizer for {path} must return a tensor, got {type(out).__name__}")
    if out.shape != masked.shape or out.dtype != masked.dtype:
        raise PluginError(
            f"{where}: quantizer for {path} changed shape/dtype {tuple(masked.shape)} {masked.dtype} "
            f"-> {tuple(out.shape)} {out.dtype}"
        )
    if bool((zero_out != 0).any()):
        raise PluginError(f"{where}: quantizer for {path} does not map 0 to 0 (pruned weights would revive)")
    if not torch.isfinite(out).all():
        raise PluginError(f"{where}: quantizer for {path} returned NaN or Inf for finite weights")
    return fq.to(w.device)


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every mask of ``model``, by parameter path."""
    return {path: p.mask.clone() for path, p in compressed_weights(model)}


def sparsity(model: nn.Module) -> float:
    """Fraction of compressed weights that are pruned."""
    total = zeros = 0
    for _, p in compressed_weights(model):
        total += p.mask.numel()
        zeros += int((~p.mask).sum())
    return zeros / total if total else 0.0


def bake(model: nn.Module) -> nn.Module:
    """Remove the parametrizations, leaving the student's weights ``Q(W ⊙ M)`` as plain parameters
    (a tied weight stays tied: one parameter at all of its paths)."""
    aliases = weight_aliases(model)
    for path, _ in list(compressed_weights(model)):
        module, attr = get_submodule_and_attr(model, path)
        _own_class(module)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        for alias in aliases.get(path, ()):
            owner, name = get_submodule_and_attr(model, alias)
            _own_class(owner)
            if parametrize.is_parametrized(owner, name):  # not a layer used twice, removed above
                # the stored tensor holds the baked value now (remove_parametrizations set it in place)
                parametrize.remove_parametrizations(owner, name, leave_parametrized=False)
        tie(model, path, aliases.get(path, ()))
    return model


def _own_class(module: nn.Module) -> None:
    """Give ``module`` a private copy of its parametrized class.

    ``copy.deepcopy`` of a parametrized module shares the generated class (which holds the
    parametrized properties) with the original; removing a parametrization from the copy would
    delete the property from the original too.
    """
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))


#: the format of :func:`spec`'s description; :func:`restore` refuses another, naming both
SPEC_VERSION = 1


def spec(model: nn.Module) -> dict[str, Any]:
    """JSON-able description of the compression structure (which weights, which quantizers, and
    the other paths of tied weights).

    With :func:`restore` it rebuilds the same structure on a fresh model, so that a
    ``state_dict`` (masks, step sizes) loads into it.
    """
    items = list(compressed_weights(model))
    out: dict[str, Any] = {
        "version": SPEC_VERSION,
        "weights": [path for path, _ in items],
        "quantizers": {path: p.quantizer_spec for path, p in items if p.quantizer is not None},
    }
    aliases = weight_aliases(model)
    if aliases:
        out["aliases"] = {path: list(others) for path, others in aliases.items()}
    return out


def restore(model: nn.Module, structure: Mapping[str, Any], registry: Any) -> None:
    """Rebuild on ``model`` the structure :func:`spec` described (strategies from ``registry``)."""
    version = structure.get("version", SPEC_VERSION)  # descriptions before versioning had this layout
    if version != SPEC_VERSION:
        raise ArtifactError(f"compression structure: format version {version!r}, this squeezer reads "
                            f"version {SPEC_VERSION}")
    aliases: Mapping[str, Sequence[str]] = structure.get("aliases", {})
    for path, others in aliases.items():
        tie(model, path, others)
    attach_paths(model, list(structure["weights"]))
    check_ties(model, aliases, "compression structure")
    quantizers: Mapping[str, Any] = structure.get("quantizers", {})

    def choose(path: str) -> tuple[str, Any] | None:
        entry = quantizers.get(path)
        if entry is None:
            return None
        return entry["name"], registry.create("quantizer", entry["name"], entry["options"], where=path)

    attach_quantizers(model, choose)


def check_ties(model: nn.Module, expected: Mapping[str, Sequence[str]], where: str) -> None:
    """Raise an :class:`ArtifactError` unless the model's tied compressed weights are exactly
    ``expected`` (a tie the record lacks would load two stored weights into one parameter)."""
    found = {path: list(others) for path, others in weight_aliases(model).items()}
    wanted = {path: list(others) for path, others in expected.items()}
    if found != wanted:
        raise ArtifactError(f"{where}: the model ties {found or 'no compressed weights'}, "
                            f"the record {wanted or 'none'}; build the model it was written from")
