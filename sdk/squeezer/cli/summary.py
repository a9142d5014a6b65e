"""The end-of-run summary: accuracies, the per-layer table, and honest sizes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from squeezer.cli.progress import metric_text, percent

_ZEROS_PACKED = "Pruned weights are zeros that the artifact packs away; they are not skipped at inference"
NO_SPEEDUP = _ZEROS_PACKED + ": the loaded model is dense, so expect a smaller file, not a faster model."
#: said instead when the layers' inputs are quantized too: then the ONNX export runs integer kernels
INTEGER_EXPORT = _ZEROS_PACKED + (
    ". Weights and layer inputs are quantized, so `squeezer export {out} --format onnx` "
    "writes an integer "
    "model (QLinearConv / QGemm in onnxruntime: faster than FP32 at larger batches; docs/concepts.md#onnx-export)."
)

#: what the model suite measured for the mutual stage (benchmarks/results/SUITE.md), said after a run's own figures
PHASE2_ON_THE_SUITE = (
    "On the model suite (six models, 3 seeds) this stage is level with the same epochs of plain "
    "fine-tuning (PQK - fine-tuning +0.13 +- 0.40 test points, +0.02 validation, 18 paired runs; "
    "benchmarks/results/SUITE.md): KD helps only where the self-teacher leads. "
    "recipes/phase1.toml fine-tunes instead."
)


def fmt_bytes(n: float | None) -> str:
    """``11,661 B (11.4 KiB)``."""
    if n is None:
        return "n/a"
    count = round(n)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count:,} B ({count / scale:.1f} {unit})"
    return f"{count:,} B"


def bits_label(bits: int | None) -> str:
    return "fp32" if bits is None or bits >= 32 else str(bits)


def _bytes(n: float | None) -> int | None:
    return None if n is None else round(n)


def stage_keys(names: tuple[str, ...] | list[str]) -> list[str]:
    """A stage's key in ``--json``: its name, or ``INDEX:NAME`` when two stages share the name."""
    return [name if names.count(name) == 1 else f"{i}:{name}" for i, name in enumerate(names)]


def result_dict(result: Any, torch_save_bytes: int | None, stages: tuple[str, ...] = ()) -> dict[str, Any]:
    """A :class:`~squeezer.pipeline.RunResult` as JSON-able data (``squeezer run --json``)."""
    report = result.report
    layers = [
        {
            "parameter": name,
            "numel": numel,
            "nonzeros": nnz,
            "sparsity": 1.0 - nnz / numel if numel else 0.0,
            "bits": bits,
        }
        for name, numel, nnz, bits in result.layers
    ]
    sizes = {
        "dense_fp32_bytes": _bytes(report.dense_fp32_bytes) if report is not None else None,
        "torch_save_bytes": _bytes(torch_save_bytes),
        "artifact_bytes": _bytes(report.file_bytes) if report is not None else None,
        "information_bound_bytes": _bytes(report.bound_bytes) if report is not None else None,
    }
    keys = stage_keys(list(stages))

    def by_name(accuracies: dict[str, float]) -> dict[str, float]:
        return {keys[int(i)] if i.isdigit() and int(i) < len(keys) else i: acc for i, acc in accuracies.items()}

    return {
        "output_dir": str(result.output_dir),
        "artifact": str(result.artifact) if result.artifact is not None else None,
        "metric": result.metric,  # what the accuracy fields hold: the task's metric
        "dense_accuracy": result.dense_accuracy,
        "accuracy": result.accuracy,
        "sparsity": result.sparsity,
        "stage_accuracy": by_name(result.record.stage_accuracy),  # by stage name, in the recipe's order
        "teacher_accuracy": by_name(result.record.teacher_accuracy),  # mutual stages' self-teachers
        "layers": layers,
        "sizes": sizes,
        "artifact_report": report.to_dict() if report is not None else None,
    }


def phase2_lines(data: dict[str, Any]) -> list[str]:
    """Per mutual stage: the student before and after it and its self-teacher (the regime: KD can
    only help a student whose teacher leads), then what the suite measured for the method."""
    metric, stages = data.get("metric", "accuracy"), list(data["stage_accuracy"].items())
    lines = []
    for i, (name, after) in enumerate(stages):
        teacher = data.get("teacher_accuracy", {}).get(name)
        if teacher is None:
            continue
        before = f"{metric_text(metric, stages[i - 1][1])} after {stages[i - 1][0]} -> " if i else ""
        gap = 100 * (teacher - after)
        lead = f", {abs(gap):.1f} points {'ahead' if gap >= 0 else 'behind'}" if metric == "accuracy" else ""
        lines.append(f"{name} (mutual distillation): student {before}{metric_text(metric, after)}; "
                     f"its self-teacher {metric_text(metric, teacher)}{lead}.")
    if lines:
        lines.append(PHASE2_ON_THE_SUITE)
    return lines


def layer_table(layers: list[dict[str, Any]]) -> Table:
    table = Table(title="compressed weights", title_justify="left", show_edge=False)
    table.add_column("parameter", overflow="fold")
    table.add_column("numel", justify="right")
    table.add_column("nonzeros", justify="right")
    table.add_column("sparsity", justify="right")
    table.add_column("bits", justify="right")
    numel = nnz = 0
    for layer in layers:
        numel += layer["numel"]
        nnz += layer["nonzeros"]
        table.add_row(Text(layer["parameter"]), f"{layer['numel']:,}", f"{layer['nonzeros']:,}",
                      percent(layer["sparsity"]), bits_label(layer["bits"]))
    if layers:
        table.add_section()
        table.add_row("total", f"{numel:,}", f"{nnz:,}", percent(1 - nnz / numel if numel else 0.0), "")
    return table


def print_summary(console: Console, data: dict[str, Any]) -> None:
    """Print the summary of a finished run (``data`` from :func:`result_dict`)."""
    console.print()
    console.rule("summary")
    dense, metric = data["dense_accuracy"], data.get("metric", "accuracy")
    console.print(
        f"{metric}: dense {metric_text(metric, dense)} -> compressed {metric_text(metric, data['accuracy'])}"
        + ("" if dense is not None else " (no dense training stage in this recipe)"),
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"sparsity of the compressed weights: {percent(data['sparsity'])}", highlight=False)
    for line in phase2_lines(data):
        console.print(Text(line), highlight=False, soft_wrap=True)
    if data["layers"]:
        console.print(layer_table(data["layers"]))
    sizes = data["sizes"]
    table = Table(title="sizes", title_justify="left", show_header=False, show_edge=False)
    table.add_column("what")
    table.add_column("bytes", justify="right")
    table.add_column("note", style="dim")
    dense_bytes = sizes["dense_fp32_bytes"]
    table.add_row("FP32 dense", fmt_bytes(dense_bytes), "4 bytes per model value")
    saved = sizes["torch_save_bytes"]
    why = "zeros stored as zeros" if saved is not None else "not available"
    if saved is not None and dense_bytes and saved > dense_bytes:
        why = "zeros stored as zeros, plus the masks and quantizer state: more than dense"
    table.add_row("torch.save (masked model)", fmt_bytes(saved), why)
    artifact = sizes["artifact_bytes"]
    ratio = f"{dense_bytes / artifact:.1f}x smaller than FP32 dense" if artifact and dense_bytes else ""
    table.add_row("artifact", fmt_bytes(artifact), ratio)
    if sizes["information_bound_bytes"] is not None:
        table.add_row("information bound", fmt_bytes(sizes["information_bound_bytes"]),
                      "nnz*bits + n*H(density), plus scales and other state")
    console.print(table)
    integer = bool((data.get("artifact_report") or {}).get("activation_bytes"))
    speed = INTEGER_EXPORT.format(out=data["output_dir"]) if integer else NO_SPEEDUP
    console.print(Text(speed), highlight=False, soft_wrap=True)
    # user text (paths, parameter names) is printed as Text: never read as rich markup or :emoji: codes
    artifact_path = data["artifact"] if data["artifact"] is not None else "not exported"
    console.print(Text(f"artifact: {artifact_path}"), highlight=False, soft_wrap=True)
