"""``squeezer run``: run a recipe with live progress and print an honest summary."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from squeezer.cli.errors import INTERRUPTED, USAGE, CliError, RunFailed
from squeezer.cli.progress import ProgressRenderer, percent
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
) -> None:
    """Run a compression recipe end to end and export the compressed model.

    Shows live progress per stage (epoch, step, loss, accuracy, sparsity, bits, ETA) on a
    terminal and one line per epoch otherwise; ends with a summary of accuracies, the compressed
    weights and the sizes, and the artifact path. An existing output directory is never
    replaced silently: pass --resume or --overwrite.
    """
    if resume and overwrite:
        raise CliError("--resume and --overwrite exclude each other (see --help)", USAGE)
    if nproc is not None and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(_launch_torchrun(nproc))
    from squeezer import pipeline
    from squeezer.plugin_manager import load_registry
    from squeezer.recipe import check_strategies, load_recipe

    rec = load_recipe(recipe if recipe is not None else pipeline.DEFAULT_RECIPE)
    registry = load_registry(block=rec.disable_plugins)
    check_strategies(rec, registry)
    out_dir = out if out is not None else Path(rec.output_dir)

    console = Console(stderr=json_out, highlight=False)
    live = not (quiet or json_out) and sys.stdout.isatty()
    renderer = ProgressRenderer(console, live=live, quiet=quiet or json_out)
    try:
        with renderer:
            result = pipeline.run(rec, out=out, resume=resume, overwrite=overwrite, seed=seed,
                                  sink=renderer, registry=registry)
    except KeyboardInterrupt:
        raise CliError(_interrupted(recipe, out_dir, seed, renderer.checkpointed or resume), INTERRUPTED) from None
    except SqueezerError as exc:
        if renderer.started:  # the run was under way: a failure, not bad input
            raise RunFailed(exc) from exc
        raise

    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    data = result_dict(result, _torch_save_bytes(result, rec))
    if json_out:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif quiet:
        typer.echo(f"accuracy {percent(result.accuracy)} (dense {percent(result.dense_accuracy)}); "
                   f"artifact: {data['artifact']}")
    else:
        print_summary(Console(highlight=False), data)


def _interrupted(recipe: Path | None, out_dir: Path, seed: int | None, resumable: bool) -> str:
    cmd = ["squeezer", "run", *([str(recipe)] if recipe is not None else []), "--out", str(out_dir)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if resumable:
        return f"interrupted; resume with: {shlex.join([*cmd, '--resume'])}"
    return f"interrupted before the first checkpoint; start again with: {shlex.join([*cmd, '--overwrite'])}"


def _launch_torchrun(nproc: int) -> int:
    """Re-run this command under ``torchrun --nproc_per_node N`` (same arguments, minus --nproc)."""
    import subprocess

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "squeezer", *args]
    return subprocess.call(cmd)


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


