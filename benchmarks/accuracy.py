"""PQK accuracy benchmark on the bundled digits example.

For each (target sparsity, weight bits) configuration and each seed, four methods get the same
total budget of training epochs (the bundled recipe's: dense 12 + prune 4 rounds x 4 + Phase 2
2 warm-up + 8 = 38; a Phase-2 mutual epoch counts as one epoch, it sees the data once):

- ``dense``: FP32, trained for the whole budget (plain torch; does not depend on the config);
- ``torch_baseline``: plain PyTorch only: dense training, iterative global L1 magnitude pruning
  with ``torch.nn.utils.prune.global_unstructured`` (same rounds, per-round epochs and geometric
  schedule as squeezer's Phase 1) with per-channel weight QAT (``torch.ao.quantization.FakeQuantize``)
  from the first round on, then QAT fine-tuning for the epochs squeezer spends in Phase 2;
- ``squeezer_phase1``: the bundled recipe with the Phase 2 ``mutual`` stage replaced by a ``train``
  stage of the same number of epochs (the ablation that shows what Phase 2 adds);
- ``squeezer_pqk``: the bundled PQK recipe with the target sparsity and bits changed.

Every method's model size is computed the same way (see :func:`size_bytes`); squeezer methods
also record the size of their exported artifact. Results go to ``benchmarks/results/``.

    python benchmarks/accuracy.py --seeds 5 --jobs 2
    python benchmarks/accuracy.py --seeds 1 --epochs-scale 0.1 --configs 0.98:2   # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_CONFIGS = ((0.90, 4), (0.95, 4), (0.97, 2), (0.98, 2))
METHODS = ("dense", "torch_baseline", "squeezer_phase1", "squeezer_pqk")
FIRST_LAYER_BITS = 8  # the bundled recipe's '@first' override

ROUNDS = 4  # pruning rounds when the bundled recipe's scheduler does not say


# --------------------------------------------------------------------------------------------
# budget
# --------------------------------------------------------------------------------------------
def bundled_recipe() -> dict[str, Any]:
    from squeezer.pipeline.runner import DEFAULT_RECIPE

    return tomllib.loads(DEFAULT_RECIPE.read_text(encoding="utf-8"))


def budget(scale: float, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Epochs and learning rates of every phase, from ``recipe`` (default: the bundled one), scaled
    by ``scale``."""
    data = recipe if recipe is not None else bundled_recipe()
    dense, prune, mutual = data["stages"]
    assert (dense["type"], prune["type"], mutual["type"]) == ("train", "prune", "mutual"), "unexpected pqk.toml"
    rounds = int(prune["scheduler"].get("rounds", ROUNDS))

    def sc(e: int, minimum: int = 1) -> int:
        return max(minimum, round(e * scale))

    b = {
        "dense_epochs": sc(dense["epochs"]),
        "rounds": rounds,
        "epochs_per_round": sc(prune["epochs_per_round"]),
        "warmup_epochs": sc(mutual.get("warmup_epochs", 1), 0),
        "mutual_epochs": sc(mutual["epochs"]),
        "lr_dense": float(dense.get("lr", data["training"]["lr"])),
        "lr_prune": float(prune.get("lr", data["training"]["lr"])),
        "lr_phase2": float(mutual.get("lr", data["training"]["lr"])),
        "batch_size": int(data["data"].get("batch_size", 64)),
    }
    b["phase2_epochs"] = b["warmup_epochs"] + b["mutual_epochs"]
    b["total_epochs"] = b["dense_epochs"] + rounds * b["epochs_per_round"] + b["phase2_epochs"]
    return b


def geometric(target: float, rounds: int) -> list[float]:
    """Sparsity after each round, as squeezer's ``geometric`` schedule computes it."""
    keep = 1.0 - target
    values = [1.0 - keep ** (r / rounds) for r in range(1, rounds + 1)]
    values[-1] = target
    return values


# --------------------------------------------------------------------------------------------
# model size, computed the same way for every method
# --------------------------------------------------------------------------------------------
def entropy_bits(n: int, nnz: int) -> float:
    """``n * H(nnz / n)``: the information content of a mask of that density."""
    if n == 0 or nnz in (0, n):
        return 0.0
    d = nnz / n
    return -n * (d * math.log2(d) + (1 - d) * math.log2(1 - d))


def size_bytes(layers: list[tuple[str, int, int, int, int]], other_floats: int) -> float:
    """Model size in bytes: for each compressed weight ``nnz * bits + numel * H(density)`` plus one
    fp32 scale per output channel when quantized (``bits < 32``); everything else (biases,
    normalization parameters and running statistics) at fp32.

    ``layers``: (name, numel, nnz, bits, out_channels).
    """
    bits = 32.0 * other_floats
    for _name, numel, nnz, b, channels in layers:
        bits += nnz * b + entropy_bits(numel, nnz)
        if b < 32:
            bits += 32 * channels
    return bits / 8


def float_state(model: nn.Module) -> dict[str, int]:
    """numel of every floating-point parameter and buffer, by name (pruning names unwrapped)."""
    out: dict[str, int] = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point() or name.endswith("_mask"):
            continue
        name = name.replace(".parametrizations.weight.original", ".weight").removesuffix("_orig")
        out[name] = t.numel()
    return out


def fresh_model() -> nn.Module:
    from squeezer.examples.digits import make_model

    return make_model()


def target_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The weights squeezer compresses by default: Linear and Conv weights, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def dense_layers(model: nn.Module) -> list[tuple[str, int, int, int, int]]:
    return [(f"{n}.weight", m.weight.numel(), m.weight.numel(), 32, m.weight.shape[0]) for n, m in target_layers(model)]


def others(model: nn.Module, compressed: list[str]) -> int:
    state = float_state(model)
    return sum(v for k, v in state.items() if k not in set(compressed))


# --------------------------------------------------------------------------------------------
# plain torch training (dense reference and baseline), mirroring squeezer's loop: Adam, one
# cosine schedule per phase (restarted every pruning round), a fresh optimizer per phase
# --------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, loader: Any) -> float:
    was = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(-1) == y).sum())
            total += int(y.numel())
    model.train(was)
    return correct / total


def train_epochs(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, lr: float, epochs: int,
                 restart_every: int | None = None) -> None:
    steps = len(loader)
    period = restart_every or epochs
    model.train()
    for epoch in range(epochs):
        for step, (x, y) in enumerate(loader):
            progress = ((epoch % period) * steps + step) / max(1, period * steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * progress))
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at epoch {epoch + 1} step {step + 1}")
            loss.backward()
            optimizer.step()


def run_dense(seed: int, b: dict[str, Any]) -> dict[str, Any]:
    from squeezer.examples.digits import make_loaders

    torch.manual_seed(seed)
    model = fresh_model()
    train, val = make_loaders(batch_size=b["batch_size"])
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_dense"])
    train_epochs(model, train, opt, b["lr_dense"], b["total_epochs"])
    acc = evaluate(model, val)
    layers = dense_layers(model)
    return {"accuracy": acc, "sparsity": 0.0,
            "size_bytes": size_bytes(layers, others(model, [n for n, *_ in layers])),
            "epochs": b["total_epochs"]}


class _WeightFakeQuant:
    """Forward pre-hook: ``module.weight = fake_quant(weight_orig * weight_mask)``; must run after
    torch's pruning hook (re-register it after every ``global_unstructured`` call)."""

    def __init__(self, fq: nn.Module) -> None:
        self.fq = fq

    def __call__(self, module: nn.Module, _inputs: Any) -> None:
        module.weight = self.fq(module.weight_orig * module.weight_mask)


def make_fake_quant(bits: int) -> nn.Module:
    from torch.ao.quantization import FakeQuantize, MovingAveragePerChannelMinMaxObserver

    return FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-(2 ** (bits - 1)),
        quant_max=2 ** (bits - 1) - 1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
    )()


def run_torch_baseline(seed: int, b: dict[str, Any], sparsity: float, bits: int) -> dict[str, Any]:
    from torch.ao.quantization import disable_observer, enable_observer
    from torch.nn.utils import prune

    from squeezer.examples.digits import make_loaders

    torch.manual_seed(seed)
    model = fresh_model()
    train, val = make_loaders(batch_size=b["batch_size"])
    layers = target_layers(model)
    params = [(m, "weight") for _, m in layers]

    # 1. dense
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_dense"])
    train_epochs(model, train, opt, b["lr_dense"], b["dense_epochs"])
    dense_acc = evaluate(model, val)

    # 2. iterative global L1 pruning, per-channel QAT from the first round on
    fqs = {name: make_fake_quant(FIRST_LAYER_BITS if i == 0 else bits) for i, (name, _) in enumerate(layers)}
    for name, fq in fqs.items():
        model.get_submodule(name).add_module("weight_fake_quant", fq)
    handles: list[Any] = []
    previous = 0.0
    opt = None
    for target in geometric(sparsity, b["rounds"]):
        # global_unstructured prunes a fraction of the *remaining* weights
        amount = 1.0 - (1.0 - target) / (1.0 - previous)
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        previous = target
        for h in handles:  # keep the fake-quant hook after the (re-registered) pruning hook
            h.remove()
        handles = [m.register_forward_pre_hook(_WeightFakeQuant(fqs[name])) for name, m in layers]
        if opt is None:  # after the first round, so the fake-quant observers' state exists
            opt = torch.optim.Adam(model.parameters(), lr=b["lr_prune"])
        else:
            forget_pruned([(m, "weight") for _, m in layers], opt)
        train_epochs(model, train, opt, b["lr_prune"], b["epochs_per_round"])
    phase1_acc = _eval_quant(model, val, disable_observer, enable_observer)

    # 3. QAT fine-tuning for the epochs squeezer spends in Phase 2
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_phase2"])
    train_epochs(model, train, opt, b["lr_phase2"], b["phase2_epochs"])
    acc = _eval_quant(model, val, disable_observer, enable_observer)

    # pruned weights must stay exactly 0 through fake quantization; count what is stored
    model.apply(disable_observer)
    stats = []
    zero_ok = True
    with torch.no_grad():
        for i, (name, m) in enumerate(layers):
            mask = m.weight_mask.bool()
            w = fqs[name](m.weight_orig * m.weight_mask)
            zero_ok &= bool((w[~mask] == 0).all())
            stats.append((f"{name}.weight", mask.numel(), int(mask.sum()), FIRST_LAYER_BITS if i == 0 else bits,
                          mask.shape[0]))
    numel = sum(s[1] for s in stats)
    nnz = sum(s[2] for s in stats)
    fq_floats = sum(t.numel() for fq in fqs.values() for t in list(fq.parameters()) + list(fq.buffers())
                    if t.is_floating_point())
    other = others(model, [s[0] for s in stats]) - fq_floats  # fake-quant scales are counted per channel
    return {"accuracy": acc, "dense_accuracy": dense_acc, "phase1_accuracy": phase1_acc,
            "sparsity": 1 - nnz / numel, "pruned_stay_zero": zero_ok,
            "layer_density": {s[0]: s[2] / s[1] for s in stats},
            "size_bytes": size_bytes(stats, other), "epochs": b["total_epochs"]}


def forget_pruned(owners: list[tuple[nn.Module, str]], opt: torch.optim.Optimizer) -> None:
    """As squeezer does: zero Adam moments at newly pruned entries of each torch-pruned
    ``(module, attr)`` (its ``attr_orig`` parameter and ``attr_mask`` buffer)."""
    for module, attr in owners:
        mask = getattr(module, f"{attr}_mask")
        for value in opt.state.get(getattr(module, f"{attr}_orig"), {}).values():
            if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                value.mul_(mask)


def _eval_quant(model: nn.Module, val: Any, disable: Any, enable: Any) -> float:
    """Evaluate with the observers frozen (FakeQuantize observes in eval mode too)."""
    model.apply(disable)
    try:
        return evaluate(model, val)
    finally:
        model.apply(enable)


# --------------------------------------------------------------------------------------------
# squeezer
# --------------------------------------------------------------------------------------------
def squeezer_recipe(b: dict[str, Any], sparsity: float, bits: int, phase2: bool, out: str,
                    data: dict[str, Any] | None = None, name: str = "pqk.toml") -> Any:
    """The bundled recipe (or ``data``, a recipe ``name`` read as a dict with train, prune and
    mutual stages) on the budget ``b`` at ``sparsity``/``bits``; without ``phase2`` the mutual stage
    becomes a fine-tuning ``train`` stage of the same epochs."""
    from squeezer.recipe import recipe_from_dict

    data = bundled_recipe() if data is None else data
    dense, prune, mutual = data["stages"]
    dense["epochs"] = b["dense_epochs"]
    prune["scheduler"] = {**prune["scheduler"], "target": sparsity, "rounds": b["rounds"]}
    prune["epochs_per_round"] = b["epochs_per_round"]
    if b.get("min_density") is not None:
        prune["min_density"] = b["min_density"]
    prune["quantizer"] = {**prune["quantizer"], "bits": bits}  # the '@first' 8-bit override stays
    if phase2:
        mutual["warmup_epochs"] = b["warmup_epochs"]
        mutual["epochs"] = b["mutual_epochs"]
        last = mutual
    else:
        last = {"type": "train", "name": "finetune", "epochs": b["phase2_epochs"], "lr": b["lr_phase2"]}
    data["stages"] = [dense, prune, last]
    data["output_dir"] = out
    data["device"] = "cpu"
    return recipe_from_dict(data, source=f"{name} (s={sparsity}, b={bits}, phase2={phase2})")


def run_recipe(make_recipe: Callable[[str], Any], seed: int) -> tuple[Any, dict[str, float], list[float]]:
    """Run ``make_recipe(output_dir)`` in a temporary folder: the result, seconds per stage and the
    teacher's accuracy per epoch (Phase 2)."""
    from squeezer.pipeline import runner
    from squeezer.pipeline.events import EpochEnded, StageEnded, StageStarted

    stage_seconds: dict[str, float] = {}
    teacher_acc: list[float] = []
    started: dict[int, float] = {}

    def sink(event: Any) -> None:
        if isinstance(event, StageStarted):
            started[event.index] = time.perf_counter()
        elif isinstance(event, StageEnded):
            stage_seconds[event.name] = time.perf_counter() - started.get(event.index, time.perf_counter())
        elif isinstance(event, EpochEnded) and "teacher_accuracy" in event.extra:
            teacher_acc.append(event.extra["teacher_accuracy"])

    with tempfile.TemporaryDirectory(prefix="squeezer-bench-") as tmp:
        result = runner.run(make_recipe(tmp), out=tmp, overwrite=True, seed=seed, sink=sink, export=True)
    return result, stage_seconds, teacher_acc


def run_squeezer(seed: int, b: dict[str, Any], sparsity: float, bits: int, phase2: bool) -> dict[str, Any]:
    result, stage_seconds, teacher_acc = run_recipe(
        lambda out: squeezer_recipe(b, sparsity, bits, phase2, out), seed)
    file_bytes = int(result.report.file_bytes) if result.report is not None else None
    payload = getattr(result.report, "payload_bytes", None)
    model = fresh_model()
    stats = [(path, numel, nnz, bits_, model.get_parameter(path).shape[0]) for path, numel, nnz, bits_ in
             result.layers]
    out = {"accuracy": result.accuracy, "dense_accuracy": result.dense_accuracy, "sparsity": result.sparsity,
           "size_bytes": size_bytes(stats, others(model, [s[0] for s in stats])),
           "artifact_bytes": file_bytes, "artifact_payload_bytes": int(payload) if payload is not None else None,
           "stage_accuracy": result.record.stage_accuracy, "stage_seconds": stage_seconds,
           "layer_density": {s[0]: s[2] / s[1] for s in stats}, "layer_bits": {s[0]: s[3] for s in stats},
           "epochs": b["total_epochs"]}
    if teacher_acc:
        out["teacher_accuracy"] = teacher_acc[-1]
    return out


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_task(task: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(task["threads"])
    b = task["budget"]
    method, seed, cfg = task["method"], task["seed"], task["config"]
    start = time.perf_counter()
    row: dict[str, Any] = {"method": method, "config": cfg, "seed": seed}
    try:
        if method == "dense":
            row.update(run_dense(seed, b))
        elif method == "torch_baseline":
            row.update(run_torch_baseline(seed, b, cfg["sparsity"], cfg["bits"]))
        else:
            row.update(run_squeezer(seed, b, cfg["sparsity"], cfg["bits"], phase2=method == "squeezer_pqk"))
    except Exception as exc:  # one failed run must not lose the others
        row.update({"accuracy": None, "size_bytes": None, "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8)})
    row["seconds"] = time.perf_counter() - start
    return row


def parse_configs(text: str | None) -> list[tuple[float, int]]:
    if not text:
        return list(DEFAULT_CONFIGS)
    out = []
    for part in text.split(","):
        s, _, bits = part.strip().partition(":")
        if not bits:
            raise SystemExit(f"--configs: expected SPARSITY:BITS, got {part!r}")
        out.append((float(s), int(bits)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per method and config (0..N-1)")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="multiply every epoch count (each at least 1; Phase 2 warm-up may become 0)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated SPARSITY:BITS subset, e.g. '0.98:2' (default: all four)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--min-density", type=float, default=None,
                    help="squeezer prune stage's min_density (default: the recipe's; a min_density of "
                         "1 - sparsity forces every layer to exactly that density)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    args = ap.parse_args(argv)

    configs = parse_configs(args.configs)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}")
    b = budget(args.epochs_scale)
    b["min_density"] = args.min_density
    tasks: list[dict[str, Any]] = []
    common = {"threads": args.threads, "budget": b}
    for seed in range(args.seeds):
        if "dense" in methods:  # dense does not depend on the config: one run per seed
            tasks.append({**common, "method": "dense", "seed": seed, "config": None})
        for s, bits in configs:
            for m in methods:
                if m != "dense":
                    tasks.append({**common, "method": m, "seed": seed, "config": {"sparsity": s, "bits": bits}})
    # longest first (mutual epochs cost about two plain ones) for better packing across jobs
    order = {"squeezer_pqk": 0, "squeezer_phase1": 1, "torch_baseline": 2, "dense": 3}
    tasks.sort(key=lambda t: order[t["method"]])

    meta = {
        "budget": b, "epochs_scale": args.epochs_scale, "seeds": args.seeds,
        "configs": [{"sparsity": s, "bits": bits} for s, bits in configs], "methods": methods,
        "threads": args.threads, "jobs": args.jobs, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "smoke": args.epochs_scale != 1.0 or args.seeds < 5,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"{len(tasks)} runs, budget {b['total_epochs']} epochs each "
          f"(dense {b['dense_epochs']}, prune {b['rounds']}x{b['epochs_per_round']}, "
          f"phase 2 {b['warmup_epochs']}+{b['mutual_epochs']}), jobs={args.jobs}, threads={args.threads}",
          flush=True)
    rows: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        cfg = row["config"]
        where = f"s={cfg['sparsity']:.2f} b={cfg['bits']}" if cfg else "-"
        acc = f"{row['accuracy']:.4f}" if row.get("accuracy") is not None else "FAILED " + row.get("error", "")
        print(f"[{len(rows)}/{len(tasks)} {time.perf_counter() - t0:7.1f}s] {row['method']:16s} {where:14s} "
              f"seed={row['seed']} acc={acc} ({row['seconds']:.1f}s)", flush=True)
        _write_json(args.out, {"meta": {**meta, "complete": len(rows) == len(tasks)}, "runs": rows})

    if args.jobs > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_task, tasks):
                record(row)
    else:
        for task in tasks:
            record(run_task(task))

    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta["wall_seconds"] = time.perf_counter() - t0
    _write_json(args.out, {"meta": {**meta, "complete": True}, "runs": rows})
    print(f"wrote {args.out}")

    sys.path.insert(0, str(HERE))
    import report

    report.write_all(args.out.parent)
    failed = [r for r in rows if r.get("error")]
    return 1 if failed else 0


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
