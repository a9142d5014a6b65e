"""``squeezer run``: run a recipe with live progress and print an honest summary."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from squeezer.cli.errors import INTERRUPTED, USAGE, CliError, RunFailed
from squeezer.cli.progress import ProgressRenderer, metric_text
from squeezer.cli.summary import print_summary, result_dict
from squeezer.errors import SqueezerError

EPILOG = """\
Examples:

  squeezer run                              (the bundled PQK example on the digits data)

  squeezer run recipe.toml --out runs/a --seed 1

  squeezer run recipe.toml --out runs/a --resume    (continue after Ctrl-C)

  squeezer run recipe.toml --nproc 2                (DDP; same as torchrun --nproc_per_node=2 -m squeezer run ...)
"""


def run_command(
    ctx: typer.Context,
    recipe: Annotated[
        Path | None,
        typer.Argument(help="Recipe TOML file. Default: the bundled PQK example.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory. Default: the recipe's output_dir.",
                     show_default=False),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the checkpoints and artifact already in --out.")
    ] = False,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed in 0..2**63-1 (overrides the recipe's).",
                                 min=0, max=2**63 - 1, show_default=False)
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress; print only the result line.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document with the result (no progress).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    nproc: Annotated[
        int | None,
        typer.Option("--nproc", min=1, show_default=False,
                     help="Launch N processes with torchrun (DDP; gloo on CPU, NCCL on GPUs)."),
    ] = None,
    model_factory: Annotated[
        str | None,
        typer.Option("--model", show_default=False, metavar="MODULE:FUNCTION",
                     help="Model factory replacing the recipe's [model] (its options dropped): the bundled "
                          "PQK recipe on your own model without copying a recipe file."),
    ] = None,
    data_factory: Annotated[
        str | None,
        typer.Option("--data", show_default=False, metavar="MODULE:FUNCTION",
                     help="Data factory replacing the recipe's [data] (its options dropped); it returns "
                          "(train_loader, val_loader)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", show_default=False, metavar="NAME",
                     help="The task replacing the recipe's (classification, token_classification, language_model, "
                          "regression, or a plugin's; its options dropped), e.g. the bundled recipe with "
                          "--model/--data on a language model."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=0, show_default=False,
                     help="CPU threads for torch during the run (overrides the recipe's threads, default 1; "
                          "0: torch's default, one per core). Under --nproc the ranks share them."),
    ] = None,
) -> None:
    """Run a compression recipe end to end and export the compressed model.

    Shows live progress per stage (epoch, step, loss, accuracy, sparsity, bits, ETA) on a
    terminal and one line per epoch otherwise; ends with a summary of accuracies, the compressed
    weights and the sizes, and the artifact path. An existing output directory is never
    replaced silently: pass --resume or --overwrite.
    """
    if resume and overwrite:
        raise CliError("--resume and --overwrite exclude each other (see --help)", USAGE)
    # `squeezer --debug run` sets it on the root command; the ranks of --nproc get it as run's own
    debug = debug or bool(ctx.parent is not None and ctx.parent.params.get("debug"))
    from squeezer.cli import preflight
    from squeezer.pipeline.outdir import CHECKPOINT_DIR, CHECKPOINT_NAME
    from squeezer.plugin_manager import load_registry
    from squeezer.recipe import check_strategies, load_recipe, with_factories

    rec = with_factories(load_recipe(recipe if recipe is not None else _default_recipe()),
                         model=model_factory, data=data_factory, task=task)
    factories = [arg for flag, value in (("--model", model_factory), ("--data", data_factory), ("--task", task))
                 if value for arg in (flag, value)]
    registry = load_registry(block=rec.disable_plugins)
    check_strategies(rec, registry)
    preflight.check_factories(rec, recipe)
    out_dir = out if out is not None else Path(rec.output_dir)
    if nproc is not None and "WORLD_SIZE" not in os.environ:
        # everything the ranks would refuse is refused here, once, before any rank starts
        preflight.check_output_dir(out_dir, resume=resume, overwrite=overwrite)
        checkpoint = out_dir / CHECKPOINT_DIR / CHECKPOINT_NAME
        before = _mtime(checkpoint)

        def hint() -> str:
            now = _mtime(checkpoint)
            written = now is not None and (resume or now != before)
            return _interrupted(recipe, out_dir, seed, written, nproc=nproc, threads=threads, factories=factories)

        from squeezer.cli.launch import launch

        rank_args = _rank_args(recipe, out_dir, resume=resume, overwrite=overwrite, seed=seed, quiet=quiet,
                               json_out=json_out, debug=debug, threads=threads, factories=factories)
        raise typer.Exit(launch(nproc, rank_args, interrupted_hint=hint, debug=debug))

    from squeezer import pipeline

    console = Console(stderr=json_out, highlight=False)
    live = not (quiet or json_out) and sys.stdout.isatty()
    renderer = ProgressRenderer(console, live=live, quiet=quiet or json_out)
    try:
        with renderer:
            result = pipeline.run(rec, out=out, resume=resume, overwrite=overwrite, seed=seed,
                                  sink=renderer, registry=registry, threads=threads)
    except KeyboardInterrupt:
        raise CliError(_interrupted(recipe, out_dir, seed, renderer.checkpointed or resume, threads=threads,
                                    factories=factories), INTERRUPTED) from None
    except SqueezerError as exc:
        if renderer.started:  # the run was under way: a failure, not bad input
            raise RunFailed(exc) from exc
        raise

    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    data = result_dict(result, _torch_save_bytes(result, rec), tuple(s.label for s in rec.stages))
    if json_out:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif quiet:
        metric = result.metric
        dense = metric_text(metric, result.dense_accuracy)
        typer.echo(f"{metric} {metric_text(metric, result.accuracy)} (dense {dense}); "
                   f"artifact: {data['artifact']}")
    else:
        print_summary(Console(highlight=False), data)


def _interrupted(recipe: Path | None, out_dir: Path, seed: int | None, resumable: bool, *,
                 nproc: int | None = None, threads: int | None = None, factories: list[str] | None = None) -> str:
    from squeezer.cli.launch import resume_command

    if "WORLD_SIZE" in os.environ and nproc is None:  # a rank under torchrun: the command has --nproc N
        nproc = int(os.environ.get("WORLD_SIZE", "1"))
    return resume_command(recipe, out_dir, seed, nproc, threads, resumable, factories or ())


def _default_recipe() -> Path:
    from squeezer.pipeline import DEFAULT_RECIPE

    return DEFAULT_RECIPE


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _rank_args(recipe: Path | None, out_dir: Path, *, resume: bool, overwrite: bool, seed: int | None,
               quiet: bool, json_out: bool, debug: bool, threads: int | None, factories: list[str]) -> list[str]:
    """The arguments each rank runs ``squeezer`` with: this command's, minus ``--nproc``."""
    args = ["run", *([str(recipe)] if recipe is not None else []), *factories, "--out", str(out_dir)]
    flags = {"--resume": resume, "--overwrite": overwrite, "--quiet": quiet, "--json": json_out, "--debug": debug}
    args += [flag for flag, on in flags.items() if on]
    if seed is not None:
        args += ["--seed", str(seed)]
    if threads is not None:
        args += ["--threads", str(threads)]
    return args


def _torch_save_bytes(result: Any, recipe: Any) -> int | None:
    """``torch.save`` size of the compressed model's state (the masked model), for comparison."""
    if getattr(result, "model", None) is not None:
        from squeezer.artifact import torch_save_size

        return int(torch_save_size(result.model))
    if result.artifact is None:
        return None
    from squeezer.artifact import load, torch_save_size
    from squeezer.factories import build_module
    from squeezer.pipeline.rebuild import final_factory

    try:
        model = load(result.artifact, build_module(*final_factory(recipe)))
    except SqueezerError:
        return None
    return int(torch_save_size(model))


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG)(run_command)


