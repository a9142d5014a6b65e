"""Latency in onnxruntime (CPU provider) of squeezer's ONNX exports against the dense FP32 ONNX of
the same model, at 1 and 2 threads and batch 1 and 32, on the bundled digits CNN, the KWS DS-CNN and
a ResNet-18; accuracy in onnxruntime against the student's own (torch) accuracy on the two bundled
examples; a latency-vs-accuracy plot.

Variants, all exported by ``squeezer.artifact.onnx_export.export_onnx`` and verified by it:

- ``fp32``: the dense model (no compression): the baseline;
- ``w4``: 80 % pruned, 4-bit LSQ weights stored as INT4 codes + DequantizeLinear (weights only);
- ``w8``: 80 % pruned, 8-bit LSQ weights as INT8 codes + DequantizeLinear (weights only);
- ``w4a8``: as ``w4`` plus 8-bit activations (below); the 4-bit codes are stored as INT8, since
  onnxruntime's integer kernels take 8-bit weights only;
- ``w8a8``: as ``w8`` plus 8-bit LSQ activation quantizers (QuantizeLinear/DequantizeLinear;
  BatchNorm folded; biases of Gemms as INT32), so onnxruntime runs QLinearConv / QGemm (and, on
  the ResNet, QLinearAdd and QLinearGlobalAveragePool);
- ``w4_loadfold``: the ``w4`` file in a session with ``session.disable_quant_qdq = 1``: onnxruntime
  then folds the DequantizeLinear of constant weights into float weights when it loads the model.
- ``w8a8_pool`` (KWS only): ``w8a8`` plus an 8-bit quantizer on the global pooling's input (an
  identity module appended to the blocks; no recipe writes one, recipes quantize the inputs of the
  compressed layers): the DS-CNN with every kernel integer, to separate what the float last
  convolution costs from what onnxruntime's integer kernels cost.
- ``w8a8_f1`` (digits) / ``w8a8_pool_f1`` (KWS): ``w8a8`` / ``w8a8_pool`` with the first layer's
  input left in float (what ``activations = { bits = 8, overrides = [{ pattern = "@first", skip = true }] }``
  does in a recipe): onnxruntime then runs the first convolution (one input channel) as a float Conv
  on its 8-bit weights, since its integer kernel measured slower than the float one there. The
  export writes that weight as float values (``fold_float_inputs``, the default), which onnxruntime
  prepacks; ``w8a8_f1q`` / ``w8a8_pool_f1q``: the same with ``fold_float_inputs=False`` (the weight
  as INT8 codes + DequantizeLinear, run on every call), the export before that pass.

Activation quantizers: on the digits CNN and the DS-CNN, on the input of every Conv/Linear (signed
on the raw input, unsigned after a ReLU), what a recipe's activation quantization does. On the
ResNet-18 also where a residual network needs them for integer kernels throughout: each basic
block's input (shared by its first convolution, its downsampling convolution and the identity),
the residual branch before the Add and the downsampled shortcut (signed: BatchNorm output), and the
global pooling's input.

ResNet-18: ``timm.create_model("resnet18", pretrained=False)`` cannot be used here: timm requires
torchvision, and pip with the repository's constraints resolves it to a torchvision wheel built
for CUDA that does not load with the CPU build of torch. :class:`ResNet18` is timm's resnet18
written out (7x7 stride-2 stem, 3x3 max pool, 2-2-2-2 basic blocks of 64-128-256-512 channels with
1x1 downsampling, global average pool, 1000-way Linear: 11.7 M parameters), plus two identity
modules per block that give the quantizers a place on the residual branch and the shortcut.
It runs at 64x64 (``RESNET_SIZE``) with random weights and BatchNorm statistics of real inputs (the
digits images, bilinearly upsampled, on three channels), since latency does not depend on training;
its steps are calibrated on those inputs; it has no accuracy figure.

Digits and KWS: the dense model is trained (``DENSE_EPOCHS``), each compressed variant is made from
it (magnitude pruning, LSQ weights, activation steps initialized on the first batch) and fine-tuned
(``FINETUNE_EPOCHS``, quantization-aware), then its validation accuracy is measured in torch (the
student, ``model.eval()``) and in onnxruntime (the exported file, each variant's session) on the
whole validation split (450 digits images; 1,200 KWS utterances). Short schedules: these are not
the recipes' accuracies (``benchmarks/accuracy.py``, ``benchmarks/kws.py`` measure those).

Each session uses the export's one setting (``session.qdq_matmulnbits_accuracy_level = 1``), every
graph optimization, ``intra_op_num_threads`` 1 or 2 and ``inter_op_num_threads`` 1. Median over
the timed runs after a warm-up, the variants interleaved in rotating order to cancel drift; a cell
runs ``--runs`` rounds, fewer (at least ``--min-runs``) when a round takes long (``--cell-seconds``).
onnxruntime's profiler gives the kernel time per operator and the session overhead for fp32 and
w8a8 (1 thread). The machine may be shared: ratios measured in one run are what the table reports,
absolute times vary. Writes ``results/onnx_latency.json``, ``results/ONNX_LATENCY.md`` and
``results/onnx_latency.png``.

    python benchmarks/onnx_latency.py
    # smoke:
    python benchmarks/onnx_latency.py --runs 20 --models digits --dense-epochs 1 --finetune-epochs 1 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import copy
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
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import report  # noqa: E402  (benchmarks/report.py: keep the hand-written analysis on a rerun)

RESULTS = HERE / "results"
SPARSITY = 0.8
MIN_DENSITY = 0.02
VARIANTS = ("fp32", "w4", "w8", "w4a8", "w8a8", "w4_loadfold")
#: variants that time another's file with extra session config entries: ``w4_loadfold`` is the w4
#: file with onnxruntime's QDQ handling off, so that its constant folding dequantizes the weights
#: once when the session is created (the file stays small; the kernels are the float ones)
SAME_FILE = {"w4_loadfold": ("w4", {"session.disable_quant_qdq": "1"})}
#: per model, variants besides VARIANTS: on the DS-CNN, w8a8 plus a quantizer on the global pooling's
#: input (an identity module appended to the blocks), which no recipe writes (recipes quantize the
#: inputs of compressed layers), to measure the model with every kernel integer
#: ``_f1``: the first layer's input stays float (a recipe's ``@first`` activation override with skip)
#: ``_f1q``: the same, its first weight kept as codes + DequantizeLinear (``fold_float_inputs=False``)
EXTRA = {"digits": ("w8a8_f1", "w8a8_f1q"), "kws": ("w8a8_pool", "w8a8_pool_f1", "w8a8_pool_f1q")}
THREADS = (1, 2)
BATCHES = (1, 32)
MODELS = ("digits", "kws", "resnet18")
#: the models with data to train on and an accuracy to report
TRAINED = ("digits", "kws")
RESNET_SIZE = 64
DENSE_EPOCHS = {"digits": 30, "kws": 10}
FINETUNE_EPOCHS = {"digits": 6, "kws": 3}
#: the ResNet's float error over 20 convolutions exceeds the export's default bound (1e-5 + 1e-4 |y|)
EXPORT_ATOL = {"resnet18": 1e-3}
GOAL = 0.5


# --- models ------------------------------------------------------------------------------------


class Tap(nn.Module):
    """Identity: a module whose input an activation quantizer can take (a tensor no layer reads first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class BasicBlock(nn.Module):
    """timm's / torchvision's ResNet basic block (``residual`` and ``shortcut``: identities)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1, self.act1 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)
        self.residual, self.shortcut, self.act2 = Tap(), Tap(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x if self.downsample is None else self.shortcut(self.downsample(x))
        h = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        out: torch.Tensor = self.act2(self.residual(h) + s)
        return out


class ResNet18(nn.Module):
    """timm's ``resnet18`` (``pretrained=False``) written out: see the module docstring."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1, self.act1, self.maxpool = nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, c in enumerate((64, 128, 256, 512)):
            layers.append(nn.Sequential(BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        out: torch.Tensor = self.fc(torch.flatten(self.global_pool(x), 1))
        return out


def splits(model: str) -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset] | None:
    """Training and validation data of a bundled example (None for the ResNet)."""
    if model == "digits":
        from squeezer.examples.digits import digits_tensors

        return digits_tensors()
    if model == "kws":
        from squeezer.examples import kws

        return kws.make_datasets()
    return None


def data(model: str, val: torch.utils.data.TensorDataset | None = None) -> torch.Tensor:
    """A batch of 32 real inputs (to calibrate activation steps and to time with)."""
    if val is not None:
        return val.tensors[0][:32]
    from squeezer.examples.digits import digits_tensors

    images = digits_tensors()[1].tensors[0][:32]
    x = nn.functional.interpolate(images, size=(RESNET_SIZE, RESNET_SIZE), mode="bilinear").repeat(1, 3, 1, 1)
    return (x - x.mean()) / x.std()


def build(model: str, x: torch.Tensor) -> nn.Module:
    """The model with random weights and BatchNorm statistics of ``x``: at their initial running
    statistics (mean 0, variance 1) the random KWS DS-CNN's activations fade to nearly constant outputs."""
    net: nn.Module
    if model == "digits":
        from squeezer.examples.digits import make_model

        net = make_model()
    elif model == "kws":
        from squeezer.examples.kws import make_model as make_kws

        net = make_kws()
    else:
        net = ResNet18()
    batchnorms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in batchnorms]
    for m in batchnorms:
        m.momentum = None  # a cumulative average over the passes below
    net.train()
    with torch.no_grad():
        for _ in range(4 if model != "resnet18" else 2):
            net(x)
    for m, momentum in zip(batchnorms, momenta, strict=True):
        m.momentum = momentum
    return net.eval()


def activation_sites(model: str, net: nn.Module) -> tuple[list[str], list[str]]:
    """``(signed, unsigned)``: the modules whose inputs get 8-bit activation quantizers (see the docstring)."""
    layers = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if model != "resnet18":
        return layers[:1], layers[1:]  # the raw input; after a ReLU
    blocks = [n for n, m in net.named_modules() if isinstance(m, BasicBlock)]
    shortcuts = [f"{b}.shortcut" for b in blocks if net.get_submodule(b).downsample is not None]
    return (["conv1", *(f"{b}.residual" for b in blocks), *shortcuts],
            [*blocks, *(f"{b}.conv2" for b in blocks), "global_pool", "fc"])


def compressed(model: str, variant: str, dense: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``dense`` compressed as ``variant``, its activation steps initialized on ``x``."""
    import squeezer
    import squeezer.compress as sc
    from squeezer.engine.activations import attach_activation_quantizers

    torch.manual_seed(0)
    net = copy.deepcopy(dense).eval()
    if variant == "fp32":
        return net
    pool, float_first = "_pool" in variant, "_f1" in variant
    if pool:
        net.blocks = nn.Sequential(*net.blocks, Tap())  # type: ignore[arg-type]
    registry = squeezer.load_registry(autoload=False)
    bits = 4 if variant.startswith("w4") else 8
    sc.attach(net)
    sc.prune(net, lambda p, w: w.abs(), SPARSITY, min_density=MIN_DENSITY)
    sc.attach_quantizers(net, lambda p: ("lsq", registry.create("quantizer", "lsq", {"bits": bits})))
    if "a8" in variant:
        signed, unsigned = activation_sites(model, net)
        attach_activation_quantizers(net, signed[1:] if float_first else signed, bits=8, signed=True)
        attach_activation_quantizers(net, unsigned + ([f"blocks.{len(net.blocks) - 1}"] if pool else []),
                                     bits=8, signed=False)
    with torch.no_grad():
        net(x)  # initializes the activation steps
    return net


# --- training (digits, KWS) ----------------------------------------------------------------------


def train(net: nn.Module, dataset: torch.utils.data.TensorDataset, epochs: int, lr: float, seed: int = 0) -> None:
    """Adam with a cosine schedule, batch 64, cross-entropy (quantization-aware when ``net`` is compressed)."""
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * len(loader)))
    net.train()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            optimizer.step()
            schedule.step()
    net.eval()


def torch_accuracy(net: nn.Module, val: torch.utils.data.TensorDataset) -> float:
    with torch.no_grad():
        logits = torch.cat([net(xb) for xb in val.tensors[0].split(256)])
    return float((logits.argmax(1) == val.tensors[1]).float().mean()) * 100


def ort_accuracy(path: Path, val: torch.utils.data.TensorDataset, config: dict[str, str] | None = None) -> float:
    s = session(path, 1, config)
    name = s.get_inputs()[0].name
    logits = np.concatenate([s.run(None, {name: np.ascontiguousarray(xb.numpy())})[0]
                             for xb in val.tensors[0].split(256)])
    return float((logits.argmax(1) == val.tensors[1].numpy()).mean()) * 100


# --- onnxruntime ----------------------------------------------------------------------------------


def session(path: Path, threads: int, config: dict[str, str] | None = None, profile: str | None = None) -> Any:
    import onnxruntime as ort

    from squeezer.artifact.onnx_verify import session_options

    options = session_options(ort)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
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
    os.remove(options.optimized_model_filepath)
    return dict(sorted(ops.items()))


def profile(path: Path, feed: np.ndarray, tmp: Path, runs: int) -> dict[str, Any]:
    """onnxruntime's profile at 1 thread: mean microseconds per run in each operator type's kernels,
    their sum, and the session's whole ``run`` (the difference: the per-run overhead outside kernels)."""
    s = session(path, 1, profile=str(tmp / "profile"))
    name = s.get_inputs()[0].name
    for _ in range(runs):
        s.run(None, {name: feed})
    events = json.loads(Path(s.end_profiling()).read_text())
    kernels: dict[str, float] = {}
    nodes: dict[str, list[Any]] = {}
    whole, n = 0.0, 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            kernels[op] = kernels.get(op, 0.0) + e["dur"]
            nodes.setdefault(e["name"].removesuffix("_kernel_time"), [op, 0.0])[1] += e["dur"]
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            whole, n = whole + e["dur"], n + 1
    kernels = {op: t / n for op, t in sorted(kernels.items(), key=lambda kv: -kv[1])}
    return {"run_us": whole / n, "kernels_us": sum(kernels.values()), "by_op_us": kernels,
            "nodes_us": [[name, op, t / n] for name, (op, t) in nodes.items()]}


def time_variants(paths: dict[str, Path], x: torch.Tensor, threads: int, batch: int, runs: int, min_runs: int,
                  cell_seconds: float, warmup: int) -> tuple[dict[str, float], int]:
    """Median seconds per run of each variant, interleaved in rotating order, and the rounds timed."""
    sessions = {v: session(p, threads) for v, p in paths.items()}
    sessions.update({v: session(paths[base], threads, config) for v, (base, config) in SAME_FILE.items()
                     if base in paths})
    feed = np.ascontiguousarray(x[:batch].numpy())
    names = {v: s.get_inputs()[0].name for v, s in sessions.items()}
    start = time.perf_counter()
    for v, s in sessions.items():
        for _ in range(warmup):
            s.run(None, {names[v]: feed})
    per_round = (time.perf_counter() - start) / warmup
    rounds = max(min_runs, min(runs, int(cell_seconds / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {v: [] for v in sessions}
    order = list(sessions)
    for i in range(rounds):
        for v in order[i % len(order):] + order[:i % len(order)]:
            start = time.perf_counter()
            sessions[v].run(None, {names[v]: feed})
            times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}, rounds


# --- the benchmark -----------------------------------------------------------------------------------


def run(models: list[str], runs: int, min_runs: int, cell_seconds: float, warmup: int, dense_epochs: dict[str, int],
        finetune_epochs: dict[str, int]) -> dict[str, Any]:
    from squeezer.artifact.onnx_export import export_onnx

    result: dict[str, Any] = {
        "config": {"sparsity": SPARSITY, "min_density": MIN_DENSITY, "runs": runs, "min_runs": min_runs,
                   "cell_seconds": cell_seconds, "warmup": warmup, "threads": THREADS, "batches": BATCHES,
                   "resnet_size": RESNET_SIZE, "dense_epochs": dense_epochs, "finetune_epochs": finetune_epochs,
                   "torch_threads": torch.get_num_threads(),
                   "versions": {name: _version(name) for name in ("onnxruntime", "onnx", "onnxscript", "numpy")}
                   | {"torch": torch.__version__, "python": sys.version.split()[0]},
                   "timm": "not used: it requires torchvision, which resolves to a CUDA build here (ResNet18 "
                           "is timm's resnet18 written out)",
                   "machine": platform.machine(), "cpu": _cpu_name(), "cpus": os.cpu_count(),
                   "load_average_at_start": os.getloadavg()},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="squeezer-onnx-latency-") as tmpdir:
        tmp = Path(tmpdir)
        for model in models:
            t0 = time.perf_counter()
            split = splits(model)
            x = data(model, split[1] if split else None)
            dense = build(model, x)
            if split is not None:
                train(dense, split[0], dense_epochs[model], 2e-3)
            paths, entry = {}, {"variants": {}, "latency": [], "profile": {}}
            for variant in variants(model):
                if variant in SAME_FILE:
                    base, config = SAME_FILE[variant]
                    info = {**entry["variants"][base], "session_config": config,
                            "ops": optimized_ops(paths[base], tmp, config, "_" + variant)}
                    if split is not None:
                        info["accuracy_ort"] = ort_accuracy(paths[base], split[1], config)
                    entry["variants"][variant] = info
                    continue
                net = compressed(model, variant, dense, x)
                if split is not None and variant != "fp32":
                    train(net, split[0], finetune_epochs[model], 1e-3)
                path = tmp / f"{model}_{variant}.onnx"
                atol = EXPORT_ATOL.get(model, 1e-5)
                report = export_onnx(net, path, x, atol=atol, rtol=max(1e-4, atol),
                                     fold_float_inputs=not variant.endswith("_f1q"))
                paths[variant] = path
                info = {"file_bytes": report.file_bytes, "quantized": report.quantized, "int4": report.int4,
                        "float_weights": report.float_weights,
                        "activations": report.activations, "max_abs_diff": report.max_abs_diff,
                        "bound": report.atol, "ops": optimized_ops(path, tmp)}
                if split is not None:
                    info["accuracy_torch"] = torch_accuracy(net, split[1])
                    info["accuracy_ort"] = ort_accuracy(path, split[1])
                entry["variants"][variant] = info
                acc = (f", accuracy torch {info['accuracy_torch']:.2f} % / onnxruntime {info['accuracy_ort']:.2f} %"
                       if split is not None else "")
                print(f"{model} {variant}: {report.file_bytes:,} B, max |diff| {report.max_abs_diff:.2g}{acc}",
                      flush=True)
            for variant in profiled(model):
                for batch in BATCHES:
                    feed = np.ascontiguousarray(x[:batch].numpy())
                    entry["profile"][f"{variant}_b{batch}"] = profile(paths[variant], feed, tmp,
                                                                       max(10, min(200, runs // 2)))
            for threads in THREADS:
                for batch in BATCHES:
                    medians, rounds = time_variants(paths, x, threads, batch, runs, min_runs, cell_seconds, warmup)
                    row = {"threads": threads, "batch": batch, "rounds": rounds,
                           "median_ms": {v: t * 1e3 for v, t in medians.items()},
                           "ratio": {v: t / medians["fp32"] for v, t in medians.items()}}
                    entry["latency"].append(row)
                    ratios = ", ".join(f"{v} {r:.2f}x" for v, r in row["ratio"].items() if v != "fp32")
                    print(f"{model} threads={threads} batch={batch} ({rounds} rounds): fp32 "
                          f"{medians['fp32'] * 1e3:.3f} ms; {ratios}", flush=True)
            entry["seconds"] = time.perf_counter() - t0
            result["models"][model] = entry
    result["config"]["load_average_at_end"] = os.getloadavg()
    return result


def variants(model: str) -> tuple[str, ...]:
    return VARIANTS + EXTRA.get(model, ())


def profiled(model: str) -> tuple[str, ...]:
    """The variants onnxruntime's profiler runs on: the baseline, w8a8 and the float-first-layer ones."""
    return ("fp32", "w8a8", *(v for v in variants(model) if v.endswith("_f1")))


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --- report ----------------------------------------------------------------------------------------

KERNELS = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "QLinearConv", "QGemm", "QLinearAdd",
           "QLinearGlobalAveragePool", "MatMulInteger", "MatMulNBits", "DequantizeLinear", "QuantizeLinear",
           "BatchNormalization", "Add", "ReduceMean", "GlobalAveragePool")


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    versions = ", ".join(f"{k} {v}" for k, v in c["versions"].items())
    lines = ["# ONNX latency: squeezer's exports vs the dense FP32 ONNX (onnxruntime CPU)", "",
             "Written by `benchmarks/onnx_latency.py` (see its docstring for the method). Ratio = median latency of "
             "the variant / median latency of the dense FP32 ONNX of the same model, same threads and batch "
             f"(< 1 is faster; the goal for w8a8 is <= {GOAL}x). "
             f"{c['sparsity']:.0%} pruned; w4 / w8: 4- / 8-bit weights as INT4 / INT8 codes + "
             "DequantizeLinear (weights only); w4a8 / w8a8: 4- / 8-bit weights (INT8 codes) and 8-bit activations "
             "(QuantizeLinear/DequantizeLinear, BatchNorm folded, Gemm biases INT32), run by onnxruntime as "
             "QLinearConv / QGemm (QLinearAdd, QLinearGlobalAveragePool on the ResNet); w4_loadfold: the w4 file "
             "with session.disable_quant_qdq = 1; w8a8_pool (KWS): w8a8 plus a quantizer on the pooling's input, "
             "so that every kernel is integer; _f1: the first layer's input left in float (a recipe's @first "
             "activation override with skip), so its convolution runs as a float Conv. "
             f"ResNet-18: timm's resnet18 written out (timm needs torchvision, unusable here), {c['resnet_size']}x"
             f"{c['resnet_size']} input, random weights (latency only). Digits / KWS: dense trained "
             f"{c['dense_epochs']} epochs, each variant fine-tuned {c['finetune_epochs']} epochs (short schedules, "
             "not the recipes' accuracies); accuracy on the whole validation split.", "",
             f"{versions}; {c['cpu']}, {c['cpus']} CPUs, load average {c['load_average_at_start'][0]:.1f} at the "
             f"start and {c['load_average_at_end'][0]:.1f} at the end: **a shared machine** (other processes "
             "ran on the same two cores), so absolute times vary between runs and the ratios are noisy, the "
             "2-thread ones most (a second thread competes with the other load). Each cell interleaves the "
             "variants, so drift affects them alike.", ""]
    for model, entry in result["models"].items():
        trained = "accuracy_torch" in entry["variants"]["fp32"]
        head = "| variant | file (B) | vs fp32 file | max abs diff (bound) |"
        rule = "|---|---:|---:|---|"
        if trained:
            head += " accuracy torch (%) | accuracy onnxruntime (%) | ort - torch |"
            rule += "---:|---:|---:|"
        lines += [f"## {model}", "", head + " onnxruntime kernels |", rule + "---|"]
        base = entry["variants"]["fp32"]["file_bytes"]
        for v, info in entry["variants"].items():
            kernels = ", ".join(f"{op} {n}" for op, n in info["ops"].items() if op in KERNELS)
            bound = f" ({info['bound']:.2g})" if info["activations"] else ""
            acc = ""
            if trained:
                torch_acc = entry["variants"][SAME_FILE[v][0] if v in SAME_FILE else v]["accuracy_torch"]
                acc = f" {torch_acc:.2f} | {info['accuracy_ort']:.2f} | {info['accuracy_ort'] - torch_acc:+.2f} |"
            lines.append(f"| {v} | {info['file_bytes']:,} | {info['file_bytes'] / base:.2f} | "
                         f"{info['max_abs_diff']:.2g}{bound} |{acc} {kernels} |")
        names = variants(model)[1:]
        lines += ["", "| threads | batch | rounds | fp32 (ms) | " + " | ".join(f"{v} ratio" for v in names)
                  + " |", "|---:|---:|---:|---:|" + "---:|" * len(names)]
        for row in entry["latency"]:
            ratios = " | ".join(("**" if "a8" in v and row["ratio"][v] <= GOAL else "") + f"{row['ratio'][v]:.2f}x"
                                + ("**" if "a8" in v and row["ratio"][v] <= GOAL else "") for v in names)
            lines.append(f"| {row['threads']} | {row['batch']} | {row['rounds']} | {row['median_ms']['fp32']:.3f} | "
                         f"{ratios} |")
        lines += ["", "onnxruntime profile, 1 thread (microseconds per run): the session's run, the kernels' sum, the "
                  "overhead outside kernels, and the largest kernels by operator type:", "",
                  "| variant | batch | run | kernels | overhead | largest kernels |", "|---|---:|---:|---:|---:|---|"]
        for key, p in entry["profile"].items():
            variant, batch = key.rsplit("_b", 1)
            top = ", ".join(f"{op} {t:.0f}" for op, t in list(p["by_op_us"].items())[:5])
            lines.append(f"| {variant} | {batch} | {p['run_us']:.0f} | {p['kernels_us']:.0f} | "
                         f"{p['run_us'] - p['kernels_us']:.0f} | {top} |")
        if model != "resnet18":
            shown = [v for v in profiled(model) if f"{v}_b32" in entry["profile"]]
            lines += ["", "Convolution and Gemm kernels in execution order, batch 32, 1 thread (microseconds per run; "
                      "the layers line up: the float and the integer graph hold the same layers in the same order):",
                      "", "| layer | " + " | ".join(f"{v} kernel | {v}" for v in shown) + " |",
                      "|---:|" + "---|---:|" * len(shown)]
            heavy = ("Conv", "FusedConv", "Gemm", "FusedGemm", "QLinearConv", "QGemm")
            columns = [[n for n in entry["profile"][f"{v}_b32"]["nodes_us"] if n[1] in heavy] for v in shown]
            for i, layer in enumerate(zip(*columns, strict=False)):
                lines.append(f"| {i} | " + " | ".join(f"{n[1]} | {n[2]:.0f}" for n in layer) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Accuracy in onnxruntime against the latency ratio, one panel per trained model, one marker per
    variant at 1 thread / batch 32, a bar over its ratios in all four cells."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return False
    models = [m for m, e in result["models"].items() if "accuracy_torch" in e["variants"]["fp32"]]
    if not models:
        return False
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    markers = dict(zip((*VARIANTS, "w8a8_pool", "w8a8_f1", "w8a8_pool_f1", "w8a8_f1q", "w8a8_pool_f1q"),
                       "o^sDv<PXd*h", strict=True))
    for ax, model in zip(axes[0], models, strict=True):
        entry = result["models"][model]
        for v in variants(model):
            ratios = [row["ratio"][v] for row in entry["latency"]]
            ref = next(row["ratio"][v] for row in entry["latency"] if row["threads"] == 1 and row["batch"] == 32)
            acc = entry["variants"][v]["accuracy_ort"]
            ax.plot([min(ratios), max(ratios)], [acc, acc], color="0.75", lw=3, zorder=1)
            ax.scatter([ref], [acc], marker=markers[v], s=60, zorder=2, label=v)
            ax.annotate(v, (ref, acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.axvline(GOAL, color="green", ls="--", lw=1)
        ax.axvline(1.0, color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("latency / dense FP32 ONNX (marker: 1 thread, batch 32; bar: all 4 cells)")
        ax.set_ylabel("validation accuracy in onnxruntime (%)")
        ax.set_title(f"{model}: onnxruntime {result['config']['versions']['onnxruntime']}, CPU")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--runs", type=int, default=300, help="timed rounds per cell (at most)")
    parser.add_argument("--min-runs", type=int, default=20, help="timed rounds per cell (at least)")
    parser.add_argument("--cell-seconds", type=float, default=30.0, help="time budget of a cell's timed rounds")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--dense-epochs", type=int, help="override DENSE_EPOCHS (smoke runs)")
    parser.add_argument("--finetune-epochs", type=int, help="override FINETUNE_EPOCHS (smoke runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training, export)")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_latency.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dense = {m: args.dense_epochs if args.dense_epochs is not None else e for m, e in DENSE_EPOCHS.items()}
    finetune = {m: args.finetune_epochs if args.finetune_epochs is not None else e for m, e in FINETUNE_EPOCHS.items()}
    result = run(args.models, args.runs, args.min_runs, args.cell_seconds, args.warmup, dense, finetune)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    default = args.out.name == "onnx_latency.json"
    md = args.out.with_name("ONNX_LATENCY.md" if default else args.out.stem + ".md")
    md.write_text(report.keep_hand_written(md, markdown(result)), encoding="utf-8")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
