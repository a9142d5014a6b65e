"""The pipeline: run a recipe's stages in order with per-epoch atomic checkpoints and resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from squeezer import compress
from squeezer.engine.task import RunTask
from squeezer.errors import ConfigError
from squeezer.factories import build_module
from squeezer.pipeline import checkpoint, checks, distributed
from squeezer.pipeline.context import Context
from squeezer.pipeline.events import Note, RunStarted, Sink, discard
from squeezer.pipeline.loop import CHECKPOINT, Interrupted, graceful_sigint, run_stage
from squeezer.pipeline.outdir import OutputLock, has_user_content, remove_own_files
from squeezer.pipeline.rebuild import artifact_info, build_loaders, factory_at, final_factory, restore_model
from squeezer.pipeline.record import RunRecord
from squeezer.pipeline.training import evaluate
from squeezer.plugin_manager import load_registry
from squeezer.recipe.budget import Resolution, first_unresolved, length_fields, resolve_budget
from squeezer.recipe.configs import Factory, Recipe
from squeezer.recipe.loader import check_seed, check_strategies, load_recipe, recipe_to_dict
from squeezer.registry import Registry

DEFAULT_RECIPE = Path(str(resources.files("squeezer") / "recipes" / "pqk.toml"))  # the bundled PQK recipe
ARTIFACT = "model.safetensors"
__all__ = ["ARTIFACT", "CHECKPOINT", "DEFAULT_RECIPE", "Interrupted", "RunResult", "run"]


@attrs.frozen
class RunResult:
    """What a finished run produced."""

    output_dir: Path
    artifact: Path | None
    dense_accuracy: float | None
    accuracy: float
    sparsity: float
    layers: tuple[tuple[str, int, int, int], ...]  # (parameter, numel, nonzeros, bits)
    record: RunRecord
    report: Any = None  # squeezer.artifact.ArtifactReport
    model: nn.Module | None = attrs.field(default=None, repr=False, eq=False)  # the trained student
    #: the task's metric that ``accuracy`` and ``dense_accuracy`` hold (``"perplexity"`` for a language model)
    metric: str = "accuracy"


def run(
    recipe: Recipe | str | Path | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed: int | None = None,
    sink: Sink = discard,
    registry: Registry | None = None,
    export: bool = True,
    all_ranks: bool = False,
    threads: int | None = None,
) -> RunResult:
    """Run a recipe end to end (default: the bundled PQK example) and export the student.

    An existing output directory is never overwritten silently: pass ``resume=True`` to continue
    from its last checkpoint or ``overwrite=True`` to replace it. Under ``torchrun`` only rank 0
    reports progress to ``sink`` unless ``all_ranks`` is true.

    ``threads`` overrides the recipe's ``threads`` (torch's intra-op threads while the run lasts;
    0 leaves torch's setting alone); the previous setting is restored when the run returns.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe or DEFAULT_RECIPE)
    if seed is not None:
        recipe = attrs.evolve(recipe, seed=check_seed(seed, "seed"))
    if out is not None:
        recipe = attrs.evolve(recipe, output_dir=str(out))
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads: must be an integer >= 0, got {threads!r}")
        recipe = attrs.evolve(recipe, threads=threads)
    if registry is None:
        registry = load_registry(block=recipe.disable_plugins)
    check_strategies(recipe, registry)

    out_dir = Path(recipe.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: output path exists and is not a directory")
    # one run per output directory; under torchrun rank 0 holds the lock for all ranks
    with distributed.joined() as info, OutputLock(out_dir, enabled=info.is_main), _torch_threads(recipe.threads):
        return _run_locked(recipe, out_dir, resume=resume, overwrite=overwrite, sink=sink, registry=registry,
                           export=export, all_ranks=all_ranks)


def threads_per_process(threads: int, local_world_size: int | None = None) -> int | None:
    """The intra-op threads one process of the run uses: ``threads`` (the run's total on this
    machine) split over the processes torchrun started here; ``None`` for 0 in one process
    (torch's own default is kept). Under torchrun, 0 means this process's share of the cores."""
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")) or 1)
    local_world_size = max(1, local_world_size)
    if threads == 0:
        if local_world_size == 1:
            return None
        threads = os.cpu_count() or 1
    return max(1, threads // local_world_size)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set for the run (see :func:`threads_per_process`), then restored."""
    wanted = threads_per_process(threads)
    previous = torch.get_num_threads()
    if wanted is not None and wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _run_locked(recipe: Recipe, out_dir: Path, *, resume: bool, overwrite: bool, sink: Sink, registry: Registry,
                export: bool, all_ranks: bool) -> RunResult:
    """:func:`run` once the output directory is this run's."""
    ckpt_path = out_dir / CHECKPOINT
    state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume:
        if not ckpt_path.exists():
            raise ConfigError(f"{out_dir}: nothing to resume (no {CHECKPOINT})")
        state = checkpoint.load(ckpt_path)
        _check_same_recipe(recipe, state[1], ckpt_path)
    elif has_user_content(out_dir):
        if not overwrite:
            raise ConfigError(
                f"{out_dir}: output directory is not empty; pass --resume to continue or --overwrite to replace it"
            )
        if distributed.from_env().is_main:
            remove_own_files(out_dir)  # the checkpoint, the artifact and their temporary files only

    info = distributed.from_env()
    if not info.is_main and not all_ranks:
        sink = discard  # progress and files come from rank 0 only
    device = distributed.device_for(info, resolve_device(recipe.device))
    torch.manual_seed(recipe.seed)
    ctx = _context(recipe, registry, device, sink, out_dir, state)
    ctx.dist, ctx.recipe_hash = info, _recipe_hash(recipe)
    resolution = resolve_lengths(recipe, registry, ctx.train_loader, info)
    if state is not None:
        _check_same_lengths(resolution, state[1], ckpt_path)
    ctx.recipe = resolution.recipe  # in whole epochs: what the stages run (and checkpoints record)
    if recipe.sync_batchnorm and info.enabled:
        if device.type != "cuda":
            raise ConfigError("sync_batchnorm: needs CUDA devices (torch's SyncBatchNorm has no CPU kernel)")
        ctx.model = nn.SyncBatchNorm.convert_sync_batchnorm(ctx.model)
    sink(RunStarted(recipe.source, tuple(s.label for s in recipe.stages), str(out_dir),
                    str(ckpt_path) if state else None))
    for text, level in resolution.notes():
        sink(Note(text, level))
    if _own_generator(ctx.train_loader):
        sink(Note(f"data.factory {recipe.data.factory!r}: the training loader shuffles with its own "
                  "torch.Generator, so a resumed run draws other batches than an uninterrupted one; "
                  "shuffle from torch's global RNG (squeezer seeds and checkpoints it) for exact resumes",
                  "warning"))

    start_stage = state[1]["stage"] if state else 0
    mid_stage = state is not None and (state[1]["epoch"] > 0 or state[1].get("step", 0) > 0)
    with graceful_sigint() as stop:
        for index in range(start_stage, len(recipe.stages)):
            resuming = mid_stage and index == start_stage
            run_stage(ctx, index, state if resuming else None, stop)

    return _finish(ctx, export and info.is_main)


def _own_generator(loader: Any) -> bool:
    """Whether ``loader`` shuffles with a generator of its own (not torch's global RNG)."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, torch.utils.data.RandomSampler):
        return False
    return getattr(loader, "generator", None) is not None or sampler.generator is not None


def resolve_lengths(recipe: Recipe, registry: Registry, train_loader: Any,
                    info: distributed.DistInfo | None = None) -> Resolution:
    """``recipe`` with its lengths in steps or shares resolved to whole epochs of the training
    loader (as each process sees it under torchrun); a recipe in epochs only comes back as it is."""
    where = first_unresolved(recipe)
    if where is None:
        return Resolution(recipe, 0)
    loader = distributed.shard_loader(train_loader, info or distributed.from_env(), recipe.seed)
    try:
        steps = len(loader)
    except TypeError:
        raise ConfigError(f"{recipe.source}: {where}: a length in steps or as a share needs the training "
                          f"loader's length, and data.factory {recipe.data.factory!r} returned a "
                          f"{type(train_loader).__name__} without len(); give the stages in epochs") from None
    if steps < 1:
        raise ConfigError(f"{recipe.source}: {where}: the training loader of data.factory "
                          f"{recipe.data.factory!r} is empty, so steps cannot be laid on its epochs")
    return resolve_budget(recipe, steps, registry=registry)


def _check_same_lengths(resolution: Resolution, meta: dict[str, Any], path: Path) -> None:
    """A recipe in steps or shares resumes only if it resolves to the epochs its checkpoint ran
    (the training loader's length may have changed since)."""
    if not resolution.changed:
        return
    recorded = meta.get("recipe", {}).get("stages", [])
    for i, stage in enumerate(resolution.recipe.stages):
        for fields in length_fields(stage):
            name = fields["epochs"]
            was = recorded[i].get(name) if i < len(recorded) and isinstance(recorded[i], dict) else None
            if was != getattr(stage, name):
                raise ConfigError(
                    f"{path}: stages[{i}].{name}: the recipe's steps or shares now resolve to "
                    f"{getattr(stage, name)} epochs of {resolution.steps_per_epoch} steps, but this checkpoint "
                    f"ran {was}; the training loader's length changed, so the run cannot resume")


def _check_same_recipe(recipe: Recipe, meta: dict[str, Any], path: Path) -> None:
    if meta.get("recipe_hash") != _recipe_hash(recipe):
        raise ConfigError(f"{path}: the recipe (or seed, or a default it relies on, e.g. a new recipe field of this "
                          "squeezer version) changed since this checkpoint was written; cannot resume")


def _recipe_hash(recipe: Recipe) -> str:
    data = recipe_to_dict(recipe)
    data.pop("output_dir", None)
    data.pop("threads", None)  # how fast, not what: a run may resume with another thread count
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def resolve_device(name: str) -> torch.device:
    """A recipe's ``device``: 'auto' picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r}") from None
    return checks.device_usable(name, device)


def _context(recipe: Recipe, registry: Registry, device: torch.device, sink: Sink, out_dir: Path,
             state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None) -> Context:
    record = RunRecord.from_json(state[1]["records"]) if state else RunRecord()
    if state is None:
        model = build_module(recipe.model, "model")
    else:  # the user's recipe (its hash matched the checkpoint's), so its factories are trusted
        model = restore_model(recipe, state[0], state[1], registry, out_dir / CHECKPOINT)
    train_loader, val_loader = build_loaders(recipe)
    model = model.to(device)
    task = RunTask.create(registry, recipe.task.name, recipe.task.options)
    checks.first_batch(model, train_loader, device, factory_at(recipe, state[1]["stage"] if state else 0)[0].factory,
                       recipe.data.factory, task)
    return Context(recipe, registry, model, train_loader, val_loader, device, sink, out_dir, record, task=task)


def _finish(ctx: Context, export: bool) -> RunResult:
    model = ctx.model.eval()
    accuracy = evaluate(model, ctx.val_loader, ctx.device, ctx.task)[1]
    layers = []
    for path, p in compress.compressed_weights(model):
        bits = int(getattr(p.quantizer, "bits", 32)) if p.quantizer is not None else 32
        layers.append((path, p.mask.numel(), int(p.mask.sum()), bits))
    artifact_path = report = None
    if export:
        from squeezer.artifact import export as export_artifact

        artifact_path = ctx.out_dir / ARTIFACT
        factory, _ = final_factory(ctx.recipe)
        info = artifact_info(ctx.recipe)
        report = export_artifact(model, artifact_path, info=info)
        _verify_export(ctx, model, artifact_path, factory)
    return RunResult(ctx.out_dir, artifact_path, ctx.record.dense_accuracy, accuracy,
                     compress.sparsity(model), tuple(layers), ctx.record, report, model, ctx.task.metric)


def _verify_export(ctx: Context, model: nn.Module, path: Path, factory: Factory) -> None:
    """Reload the artifact into a fresh model and compare its outputs with the student's on one
    validation batch: a mismatch fails the run instead of leaving a silently wrong file."""
    from squeezer.artifact import load as load_artifact
    from squeezer.errors import ArtifactError
    from squeezer.pipeline.training import batch_to, forward

    fresh = load_artifact(path, build_module(factory, "model").to(ctx.device))
    batch = next(iter(ctx.val_loader), None)
    if batch is None:
        return
    x, _ = batch_to(batch, ctx.device, ctx.task)
    with torch.no_grad():
        expected, got = forward(model.eval(), x), forward(fresh.eval(), x)
    if not torch.allclose(expected, got, rtol=1e-5, atol=1e-5):
        diff = float((expected - got).abs().max())
        path.unlink(missing_ok=True)
        raise ArtifactError(f"{path}: export verification failed (max output difference {diff:.3g}); file removed")
