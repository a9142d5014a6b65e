"""Latency in onnxruntime (CPU provider) of squeezer's ONNX exports against the dense FP32 ONNX of
the same model, at 1 and 2 threads and batch 1 and 32, on the bundled digits CNN and KWS DS-CNN.

Variants, all exported by ``squeezer.artifact.onnx_export.export_onnx`` and verified by it:

- ``fp32``: the dense model (no compression): the baseline;
- ``w4``: 80 % pruned, 4-bit LSQ weights stored as INT4 codes + DequantizeLinear (weights only);
- ``w8``: 80 % pruned, 8-bit LSQ weights as INT8 codes + DequantizeLinear (weights only);
- ``w4a8``: as ``w4`` plus 8-bit activations (below); the 4-bit codes are stored as INT8, since
  onnxruntime's integer kernels take 8-bit weights only;
- ``w8a8``: as ``w8`` plus 8-bit LSQ activation quantizers on the input of every Conv/Linear
  (QuantizeLinear/DequantizeLinear; BatchNorm folded), so onnxruntime runs QLinearConv / QGemm;
- ``w4_loadfold``: the ``w4`` file in a session with ``session.disable_quant_qdq = 1``: onnxruntime
  then folds the DequantizeLinear of constant weights into float weights when it loads the model.

Weights are random (latency does not depend on training; the activation steps are calibrated on
one batch of the real data). Each session uses the export's one setting
(``session.qdq_matmulnbits_accuracy_level = 1``), every graph optimization, ``intra_op_num_threads``
1 or 2 and ``inter_op_num_threads`` 1. Median over ``--runs`` timed runs after a warm-up, the
variants interleaved in rotating order to cancel drift. The machine may be shared: ratios measured
in one run are what the table reports, absolute times vary. Writes ``results/onnx_latency.json``
and ``results/ONNX_LATENCY.md``.

    python benchmarks/onnx_latency.py
    python benchmarks/onnx_latency.py --runs 20 --models digits --out /tmp/x.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SPARSITY = 0.8
VARIANTS = ("fp32", "w4", "w8", "w4a8", "w8a8", "w4_loadfold")
#: variants that time another's file with extra session config entries: ``w4_loadfold`` is the w4
#: file with onnxruntime's QDQ handling off, so that its constant folding dequantizes the weights
#: once when the session is created (the file stays small; the kernels are the float ones)
SAME_FILE = {"w4_loadfold": ("w4", {"session.disable_quant_qdq": "1"})}
THREADS = (1, 2)
BATCHES = (1, 32)


def data(model: str) -> torch.Tensor:
    """A batch of 32 real inputs (to calibrate activation steps and to time with)."""
    if model == "digits":
        from squeezer.examples.digits import digits_tensors

        _, val = digits_tensors()
        return val.tensors[0][:32]
    from squeezer.examples import kws

    return kws.generate(32, 0, "val").x[:32]


def build(model: str, x: torch.Tensor) -> nn.Module:
    """The model with random weights and BatchNorm statistics of ``x``: at their initial running
    statistics (mean 0, variance 1) the random KWS DS-CNN's activations fade to nearly constant outputs."""
    if model == "digits":
        from squeezer.examples.digits import make_model

        net = make_model()
    else:
        from squeezer.examples.kws import make_model as make_kws

        net = make_kws()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average over the passes below
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(x)
    return net.eval()


def compressed(model: str, variant: str, x: torch.Tensor) -> nn.Module:
    import squeezer
    import squeezer.compress as sc

    torch.manual_seed(0)
    net = build(model, x)
    if variant == "fp32":
        return net.eval()
    registry = squeezer.load_registry(autoload=False)
    bits = 4 if variant.startswith("w4") else 8
    sc.attach(net)
    sc.prune(net, lambda p, w: w.abs(), SPARSITY)
    sc.attach_quantizers(net, lambda p: ("lsq", registry.create("quantizer", "lsq", {"bits": bits})))
    if variant.endswith("a8"):
        from squeezer_lsq.activations import attach_activation_quantizers

        layers = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        attach_activation_quantizers(net, layers[:1], bits=8, signed=True)  # the raw input
        attach_activation_quantizers(net, layers[1:], bits=8, signed=False)  # after a ReLU
    net.eval()
    with torch.no_grad():
        net(x)  # initializes the activation steps
    return net


def session(path: Path, threads: int, config: dict[str, str] | None = None) -> Any:
    import onnxruntime as ort

    from squeezer.artifact.onnx_verify import session_options

    options = session_options(ort)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def optimized_ops(path: Path, tmp: Path, config: dict[str, str] | None = None, tag: str = "") -> dict[str, int]:
    """The operators onnxruntime runs after its graph optimizations (which kernels it chose)."""
    import onnx
    import onnxruntime as ort

    from squeezer.artifact.onnx_verify import session_options

    options = session_options(ort)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.optimized_model_filepath = str(tmp / f"{path.stem}{tag}.opt.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops: dict[str, int] = {}
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return dict(sorted(ops.items()))


def time_variants(paths: dict[str, Path], x: torch.Tensor, threads: int, batch: int, runs: int,
                  warmup: int) -> dict[str, float]:
    """Median seconds per run of each variant, interleaved in rotating order."""
    sessions = {v: session(p, threads) for v, p in paths.items()}
    sessions.update({v: session(paths[base], threads, config) for v, (base, config) in SAME_FILE.items()
                     if base in paths})
    feed = np.ascontiguousarray(x[:batch].numpy())
    names = {v: s.get_inputs()[0].name for v, s in sessions.items()}
    for v, s in sessions.items():
        for _ in range(warmup):
            s.run(None, {names[v]: feed})
    times: dict[str, list[float]] = {v: [] for v in sessions}
    order = list(sessions)
    for i in range(runs):
        for v in order[i % len(order):] + order[:i % len(order)]:
            start = time.perf_counter()
            sessions[v].run(None, {names[v]: feed})
            times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def run(models: list[str], runs: int, warmup: int) -> dict[str, Any]:
    from squeezer.artifact.onnx_export import export_onnx

    result: dict[str, Any] = {
        "config": {"sparsity": SPARSITY, "runs": runs, "warmup": warmup, "threads": THREADS, "batches": BATCHES,
                   "torch": torch.__version__, "onnxruntime": _version("onnxruntime"), "python": sys.version.split()[0],
                   "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                   "load_average_at_start": os.getloadavg()},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="squeezer-onnx-latency-") as tmpdir:
        tmp = Path(tmpdir)
        for model in models:
            x = data(model)
            paths, entry = {}, {"variants": {}, "latency": []}
            for variant in VARIANTS:
                if variant in SAME_FILE:
                    base, config = SAME_FILE[variant]
                    entry["variants"][variant] = {**entry["variants"][base], "session_config": config,
                                                  "ops": optimized_ops(paths[base], tmp, config, "_" + variant)}
                    continue
                path = tmp / f"{model}_{variant}.onnx"
                report = export_onnx(compressed(model, variant, x), path, x)
                paths[variant] = path
                entry["variants"][variant] = {
                    "file_bytes": report.file_bytes, "quantized": report.quantized, "int4": report.int4,
                    "activations": report.activations, "max_abs_diff": report.max_abs_diff,
                    "bound": report.atol, "ops": optimized_ops(path, tmp),
                }
                print(f"{model} {variant}: {report.file_bytes:,} B, max |diff| {report.max_abs_diff:.2g}", flush=True)
            for threads in THREADS:
                for batch in BATCHES:
                    medians = time_variants(paths, x, threads, batch, runs, warmup)
                    row = {"threads": threads, "batch": batch, "median_ms": {v: t * 1e3 for v, t in medians.items()},
                           "ratio": {v: t / medians["fp32"] for v, t in medians.items()}}
                    entry["latency"].append(row)
                    ratios = ", ".join(f"{v} {r:.2f}x" for v, r in row["ratio"].items() if v != "fp32")
                    print(f"{model} threads={threads} batch={batch}: fp32 {medians['fp32'] * 1e3:.3f} ms; {ratios}",
                          flush=True)
            result["models"][model] = entry
    return result


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def markdown(result: dict[str, Any]) -> str:
    lines = ["# ONNX latency: squeezer's exports vs the dense FP32 ONNX (onnxruntime CPU)", "",
             "Written by `benchmarks/onnx_latency.py` (see its docstring for the method). Ratio = median latency of "
             "the variant / median latency of the dense FP32 ONNX of the same model, same threads and batch "
             "(< 1 is faster). "
             f"{result['config']['sparsity']:.0%} pruned; w4 / w8: 4- / 8-bit weights as INT4 / INT8 codes + "
             "DequantizeLinear (weights only); w4a8 / w8a8: 4- / 8-bit weights (INT8 codes) and 8-bit activations "
             "(QuantizeLinear/DequantizeLinear on every Conv/Linear input, BatchNorm folded), run by onnxruntime as "
             "QLinearConv / QGemm; w4_loadfold: the w4 file with session.disable_quant_qdq = 1. "
             f"onnxruntime {result['config']['onnxruntime']}, torch {result['config']['torch']}, "
             f"{result['config']['runs']} timed runs per cell, on {result['config']['cpus']} CPUs with a load average "
             f"of {result['config']['load_average_at_start'][0]:.1f} at the start (a shared machine: the ratios are "
             "noisy, the 2-thread ones most).", ""]
    for model, entry in result["models"].items():
        lines += [f"## {model}", "",
                  "| variant | file (B) | vs fp32 file | max abs diff (bound) | onnxruntime kernels |",
                  "|---|---:|---:|---|---|"]
        base = entry["variants"]["fp32"]["file_bytes"]
        for v, info in entry["variants"].items():
            kernels = ", ".join(f"{op} {n}" for op, n in info["ops"].items()
                                if op in ("Conv", "Gemm", "MatMul", "QLinearConv", "QGemm", "MatMulInteger",
                                          "MatMulNBits", "DequantizeLinear", "QuantizeLinear", "FusedConv",
                                          "BatchNormalization"))
            bound = f" ({info['bound']:.2g})" if info["activations"] else ""
            lines.append(f"| {v} | {info['file_bytes']:,} | {info['file_bytes'] / base:.2f} | "
                         f"{info['max_abs_diff']:.2g}{bound} | {kernels} |")
        lines += ["", "| threads | batch | fp32 (ms) | " + " | ".join(f"{v} ratio" for v in VARIANTS[1:]) + " |",
                  "|---:|---:|---:|" + "---:|" * (len(VARIANTS) - 1)]
        for row in entry["latency"]:
            ratios = " | ".join(f"{row['ratio'][v]:.2f}x" for v in VARIANTS[1:])
            lines.append(f"| {row['threads']} | {row['batch']} | {row['median_ms']['fp32']:.3f} | {ratios} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits", "kws"], choices=["digits", "kws"])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_latency.json")
    args = parser.parse_args(argv)
    result = run(args.models, args.runs, args.warmup)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    args.out.with_name("ONNX_LATENCY.md" if args.out.name == "onnx_latency.json" else args.out.stem + ".md").write_text(
        markdown(result), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
