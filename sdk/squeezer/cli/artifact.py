"""``squeezer inspect``, ``eval`` and ``export``: artifacts and checkpoints."""

from __future__ import annotations

import importlib.util
import json
import shlex
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import attrs
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from squeezer.cli.errors import FAILURE, CliError
from squeezer.cli.progress import metric_text, percent
from squeezer.cli.summary import NO_SPEEDUP, bits_label, fmt_bytes

ArtifactArg = Annotated[Path, typer.Argument(help="Artifact file (model.safetensors of a run).",
                                             show_default=False)]
EvalArg = Annotated[Path, typer.Argument(
    help="Artifact (model.safetensors), pipeline checkpoint, or a run's output directory (its artifact, else "
         "its last checkpoint).", show_default=False)]

INSPECT_EPILOG = """\
Examples:

  squeezer inspect squeezer-out/model.safetensors

  squeezer inspect squeezer-out/model.safetensors --json
"""

EVAL_EPILOG = """\
Examples:

  squeezer eval squeezer-out/model.safetensors              (the recipe recorded in the artifact)

  squeezer eval squeezer-out/model.safetensors recipe.toml

  squeezer eval squeezer-out/checkpoints/last.safetensors   (the model of an interrupted run)
"""

EXPORT_EPILOG = """\
Examples:

  squeezer export squeezer-out/checkpoints/last.safetensors --out model.safetensors

  squeezer export squeezer-out --out model.safetensors      (the run's last checkpoint)

  squeezer export squeezer-out --out model.onnx --format onnx

  squeezer export squeezer-out/model.safetensors --out model.onnx --format onnx
"""


class Format(StrEnum):
    squeezer = "squeezer"
    onnx = "onnx"


# --- inspect ---------------------------------------------------------------------------------


def report_table(report: Any) -> Table:
    table = Table(show_edge=False)
    for name, justify in (("layer", "left"), ("shape", "left"), ("sparsity", "right"), ("bits", "right"),
                          ("mask", "left"), ("bytes", "right"), ("bound", "right"), ("ratio", "right")):
        table.add_column(name, justify=justify, overflow="fold" if name == "layer" else "ellipsis")  # type: ignore[arg-type]
    for layer in report.layers:
        table.add_row(
            Text(layer.name), "x".join(map(str, layer.shape)), percent(layer.sparsity),
            bits_label(layer.bits) if layer.encoding == "quantized" else "fp32",
            layer.mask_coding, f"{layer.bytes:,}", f"{layer.bound_bytes + layer.scale_bytes:,.0f}",
            f"{layer.ratio:.3f}",
        )
    return table


def inspect_command(
    artifact: ArtifactArg,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify an artifact and report its sizes: per layer and in total, against the information bound.

    The bound of a layer of n weights with nnz kept at b bits is nnz*b + n*H(nnz/n) bits; the
    dense FP32 size counts 4 bytes per value of the whole model.
    """
    from squeezer.artifact import inspect

    report = inspect(artifact)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    console = Console(highlight=False)
    console.print(Text(f"{report.path}: {report.format} v{report.version}"), soft_wrap=True)
    console.print(report_table(report))
    totals = Table(show_header=False, show_edge=False)
    totals.add_column("what")
    totals.add_column("bytes", justify="right")
    totals.add_column("note", style="dim")
    totals.add_row("weights kept", f"{report.nnz:,} of {sum(x.numel for x in report.layers):,}",
                   f"sparsity {percent(1 - report.nnz / max(1, sum(x.numel for x in report.layers)))}")
    totals.add_row("other state", fmt_bytes(report.state_bytes), f"{report.state_numel:,} values stored as-is")
    totals.add_row("payload", fmt_bytes(report.payload_bytes), "all tensor bytes")
    totals.add_row("information bound", fmt_bytes(report.bound_bytes),
                   f"payload / bound = {report.ratio:.3f}")
    totals.add_row("file", fmt_bytes(report.file_bytes),
                   f"+ {report.header_bytes:,} B header: {report.file_ratio:.3f}x bound")
    totals.add_row("FP32 dense", fmt_bytes(report.dense_fp32_bytes),
                   f"{report.compression:.1f}x the file size")
    console.print(totals)
    console.print(NO_SPEEDUP, soft_wrap=True)


# --- eval ------------------------------------------------------------------------------------


TrustArg = Annotated[list[str] | None, typer.Option(
    "--trust-factory", help="Factory pattern ('pkg.module:function', 'pkg.*') that the file's recorded recipe may "
                            "call; repeatable. Default: squeezer's examples and SQUEEZER_TRUST_FACTORIES.",
    show_default=False)]


def eval_command(
    artifact: EvalArg,
    recipe: Annotated[
        Path | None,
        typer.Argument(help="Recipe whose [model] and [data] to use. Default: the one recorded in "
                            "the artifact, else the bundled PQK example.", show_default=False),
    ] = None,
    trust_factory: TrustArg = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Load an artifact (or a checkpoint's model) into a fresh model and report its accuracy on the
    recipe's validation data.

    Factories named by the artifact's recorded recipe are called only if trusted (--trust-factory).
    """
    from squeezer.engine.task import RunTask
    from squeezer.pipeline.rebuild import build_loaders
    from squeezer.pipeline.runner import resolve_device
    from squeezer.pipeline.training import evaluate
    from squeezer.plugin_manager import load_registry

    path = run_file(artifact, prefer="artifact")
    if file_format(path) == CHECKPOINT_FORMAT:  # a checkpoint (of an interrupted run, say): its model
        rebuilt = model_from_checkpoint(path, recipe, trust_factory or ())
    else:
        rebuilt = model_from_artifact(path, recipe, trust_factory or ())
    model, rec, trust, source = rebuilt.model, rebuilt.recipe, rebuilt.trust, rebuilt.source
    loader = build_loaders(rec, trust, source)[1]
    dev = resolve_device(rec.device)
    task = RunTask.create(load_registry(block=rec.disable_plugins), rec.task.name, rec.task.options)
    loss, value = evaluate(model.to(dev), loader, dev, task)
    samples = len(loader.dataset) if hasattr(loader, "dataset") else None
    result = {"artifact": str(path), "recipe": source, "metric": task.metric, task.metric: value, "loss": loss,
              "samples": samples}
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    on = f" on {samples:,} validation samples" if samples is not None else ""
    typer.echo(f"{task.metric}: {metric_text(task.metric, value)}{on} (loss {loss:.4f})")
    typer.echo(f"recipe: {source}")


# --- export ----------------------------------------------------------------------------------


def export_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Pipeline checkpoint, a run's output directory (its last checkpoint), or, "
                                  "with --format onnx, an artifact (model.safetensors).", show_default=False)
    ],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="File to write; replaced if it exists. Required with --format squeezer; with --format "
                            "onnx the default is model.onnx in the run directory (or the named file's name with "
                            ".onnx), which is never replaced.", show_default=False)] = None,
    format: Annotated[Format, typer.Option(
        "--format", help="Artifact format: squeezer, or onnx (quantized weights as integer codes + "
                         "DequantizeLinear, verified with onnxruntime; needs the onnx extra: "
                         "pip install -c constraints.txt -e '.[onnx]').")] = Format.squeezer,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="Recipe whose [model] and [data] rebuild the model. Default: the one recorded in the "
                         "checkpoint (its factories must be trusted).", show_default=False)] = None,
    trust_factory: TrustArg = None,
) -> None:
    """Export the model of a pipeline checkpoint (e.g. of an interrupted run) as an artifact, or
    convert a checkpoint or an artifact to ONNX.

    With --format onnx the model is traced with one batch of the recipe's validation data, and
    the written file is checked to reproduce the model's outputs in onnxruntime.
    """
    if format is Format.onnx:
        missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise CliError(f"--format onnx needs {' and '.join(missing)}: pip install -c constraints.txt -e '.[onnx]' "
                           "in squeezer's clone", FAILURE)

    from squeezer.artifact import export

    if out is None and format is Format.squeezer:
        raise CliError("--out: name the artifact file to write (e.g. --out model.safetensors)")
    path = run_file(checkpoint, prefer="checkpoint" if format is Format.squeezer else "artifact")
    if out is None:
        out = default_onnx_path(checkpoint, path)
    is_artifact = file_format(path) == ARTIFACT_FORMAT
    if is_artifact and format is Format.squeezer:
        raise CliError(f"{path}: already a squeezer artifact (squeezer inspect {shlex.quote(str(path))} reports "
                       "it); --format onnx converts it, and squeezer export CHECKPOINT writes an artifact from a "
                       "checkpoint")
    note = ""
    if is_artifact:  # its run's final checkpoint, if beside it, still has the quantizers: integer codes
        rebuilt = _final_checkpoint_of(path, recipe, trust_factory or ())
        if rebuilt is not None:
            note = " (the artifact's run's final checkpoint, which keeps the quantizers)"
        else:
            rebuilt = model_from_artifact(path, recipe, trust_factory or ())
            note = ("; an artifact holds dequantized weights, so they are float initializers here: export the "
                    "run's checkpoint for integer codes")
    else:
        rebuilt = model_from_checkpoint(path, recipe, trust_factory or ())
    model, info = rebuilt.model, rebuilt.info
    ckpt = info.get("checkpoint")
    origin = f"{ckpt['path']} (stage {ckpt['stage']}, epoch {ckpt['epoch']}){note}" if ckpt else f"{path}{note}"
    console = Console(highlight=False)
    if format is Format.onnx:
        from squeezer.artifact.onnx_export import export_onnx

        onnx_report = export_onnx(model, out, example_batch(rebuilt))
        r = onnx_report
        int4 = f" ({r.int4} as 4-bit codes)" if r.int4 else ""
        acts = f", {r.activations} activations as QuantizeLinear/DequantizeLinear" if r.activations else ""
        if r.float_weights:
            acts += f"; {r.float_weights} weights of layers with a float input as float values (faster)"
        if r.gathered_weights:
            acts += f"; {r.gathered_weights} embedding tables looked up in their codes (rows dequantized after)"
        console.print(Text(
            f"wrote {r.path}: {fmt_bytes(r.file_bytes)} ONNX (opset {r.opset}), {r.quantized} quantized weights "
            f"as integer codes + DequantizeLinear{int4}{acts}; onnxruntime matches torch (max |diff| "
            f"{r.max_abs_diff:.2g}); from {origin}"
        ), soft_wrap=True)
        console.print(Text(f"onnxruntime: to reproduce these outputs, set {r.session_hint}"), soft_wrap=True)
        return
    report = export(model, out, info=info)
    console.print(report_table(report))
    console.print(Text(
        f"wrote {report.path}: {fmt_bytes(report.file_bytes)} (FP32 dense {fmt_bytes(report.dense_fp32_bytes)}, "
        f"{report.compression:.1f}x smaller); from {origin}"
    ), soft_wrap=True)


def default_onnx_path(named: Path, path: Path) -> Path:
    """Where ``--format onnx`` writes without ``--out``: ``model.onnx`` in a named run directory, else
    the named file with the suffix ``.onnx``. A file already there is the user's: never replaced."""
    target = named / "model.onnx" if named.is_dir() else path.with_suffix(".onnx")
    if target.exists():
        raise CliError(f"{target}: already exists; pass --out {shlex.quote(str(target))} to replace it, or "
                       "another --out")
    return target


@attrs.frozen
class Rebuilt:
    """A checkpoint's model, the recipe that rebuilt it and the artifact ``info`` to export it with."""

    model: Any
    recipe: Any
    info: dict[str, Any]
    trust: Any  # None when the recipe is the user's, else the Trust its factories were checked against
    source: str


def example_batch(rebuilt: Rebuilt) -> Any:
    """The inputs of one batch of the recipe's validation data (to trace an ONNX export with), split
    from the targets as the recipe's task splits them: a tensor, a tuple, or a dict of keyword
    inputs (``input_ids``, ``attention_mask``) without its labels."""
    from squeezer.engine.task import RunTask
    from squeezer.errors import ArtifactError
    from squeezer.pipeline.rebuild import build_loaders
    from squeezer.plugin_manager import load_registry

    batch = next(iter(build_loaders(rebuilt.recipe, rebuilt.trust, rebuilt.source)[1]), None)
    if batch is None:
        raise ArtifactError("data.factory: the validation loader yields no batch to trace the model with")
    recipe = rebuilt.recipe
    task = RunTask.create(load_registry(block=recipe.disable_plugins), recipe.task.name, recipe.task.options)
    return task.split(batch)[0]


ARTIFACT_FORMAT = "squeezer-artifact"
CHECKPOINT_FORMAT = "squeezer-checkpoint"


def file_format(path: Path) -> str | None:
    """The ``format`` a squeezer file declares (artifact or checkpoint), read from its header only;
    ``None`` when it is neither (the reader then reports what is wrong with it)."""
    from squeezer import safefile
    from squeezer.errors import SqueezerError

    try:
        with safefile.open_safetensors(path, "file") as st:
            doc = json.loads((st.metadata or {}).get("squeezer", "null"))
    except (SqueezerError, OSError, ValueError):
        return None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return fmt if isinstance(fmt, str) else None


def run_file(path: Path, *, prefer: str) -> Path:
    """``path``, or for a run's output directory the file in it: its artifact or its last checkpoint
    (``prefer``), else the other one."""
    from squeezer.pipeline.outdir import ARTIFACT_NAME, CHECKPOINT_DIR, CHECKPOINT_NAME

    if not path.is_dir():
        return path
    artifact, ckpt = path / ARTIFACT_NAME, path / CHECKPOINT_DIR / CHECKPOINT_NAME
    order = (artifact, ckpt) if prefer == "artifact" else (ckpt, artifact)
    for candidate in order:
        if candidate.is_file():
            return candidate
    raise CliError(f"{path}: a directory without {ARTIFACT_NAME} or {CHECKPOINT_DIR}/{CHECKPOINT_NAME} "
                   "(not a run's output directory)")


def model_from_artifact(path: Path, recipe_path: Path | None = None, trust: Sequence[str] = ()) -> Rebuilt:
    """Load an artifact into a fresh model built by its recorded recipe (factories checked against
    ``trust``), the recipe at ``recipe_path``, or else the bundled example's."""
    from squeezer.artifact.reader import check_fits, load_into, read
    from squeezer.factories import build_module
    from squeezer.pipeline import DEFAULT_RECIPE
    from squeezer.pipeline.rebuild import final_factory
    from squeezer.recipe import load_recipe, recipe_from_dict
    from squeezer.trust import Trust

    art = read(path)
    info = art.meta.get("info", {})
    checked = None  # a recipe the user names is the user's own: its factories are called as written
    if recipe_path is not None:
        rec, source = load_recipe(recipe_path), str(recipe_path)
    elif isinstance(info.get("recipe"), dict):
        source = f"{path} (recorded recipe)"
        rec, checked = recipe_from_dict(info["recipe"], source=source), Trust.default(trust)
    else:
        rec, source = load_recipe(DEFAULT_RECIPE), str(DEFAULT_RECIPE)
    model = load_into(art, build_module(*final_factory(rec), checked, source, lambda shell: check_fits(art, shell)))
    return Rebuilt(model.eval(), rec, dict(info) if isinstance(info, dict) else {}, checked, source)


def _final_checkpoint_of(artifact: Path, recipe_path: Path | None, trust: Sequence[str]) -> Rebuilt | None:
    """The model of the finished run's checkpoint next to ``artifact`` (``RUN/model.safetensors``
    and ``RUN/checkpoints/last.safetensors``), or ``None`` when there is none or it is mid-run."""
    from squeezer.errors import SqueezerError
    from squeezer.pipeline.outdir import CHECKPOINT_DIR, CHECKPOINT_NAME

    sibling = artifact.parent / CHECKPOINT_DIR / CHECKPOINT_NAME
    if not sibling.is_file() or file_format(sibling) != CHECKPOINT_FORMAT:
        return None
    try:
        rebuilt = model_from_checkpoint(sibling, recipe_path, trust)
    except SqueezerError:
        return None
    if rebuilt.info["checkpoint"]["stage"] != len(rebuilt.recipe.stages):
        return None  # interrupted after the artifact was written: not the artifact's model
    return rebuilt


def model_from_checkpoint(path: Path, recipe_path: Path | None = None, trust: Sequence[str] = ()) -> Rebuilt:
    """Rebuild the compressed model saved in a pipeline checkpoint, with its own recorded recipe
    (factories checked against ``trust``) or the recipe at ``recipe_path``."""
    from squeezer.pipeline import checkpoint
    from squeezer.pipeline.rebuild import artifact_info, restore_model
    from squeezer.plugin_manager import load_registry
    from squeezer.recipe import load_recipe, recipe_from_dict
    from squeezer.trust import Trust

    tensors, meta = checkpoint.load(path)
    if recipe_path is not None:
        recipe, checked, source = load_recipe(recipe_path), None, str(recipe_path)
    else:
        source = f"{path} (recorded recipe)"
        recipe, checked = recipe_from_dict(meta["recipe"], source=source), Trust.default(trust)
    registry = load_registry(block=recipe.disable_plugins)
    model = restore_model(recipe, tensors, meta, registry, path, checked)
    info = {**artifact_info(recipe),
            "checkpoint": {"path": str(path), "stage": meta.get("stage"), "epoch": meta.get("epoch")}}
    return Rebuilt(model.eval(), recipe, info, checked, source)


def register(app: typer.Typer) -> None:
    app.command("inspect", epilog=INSPECT_EPILOG)(inspect_command)
    app.command("eval", epilog=EVAL_EPILOG)(eval_command)
    app.command("export", epilog=EXPORT_EPILOG)(export_command)
