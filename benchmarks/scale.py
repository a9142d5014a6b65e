"""Scale benchmark: the cost of a global mask update as models grow, and of a training step.

Mask update (``squeezer.compress.prune``, global L1 magnitude, ``min_density=0.02``) on stacks of
``Linear`` layers of 1M, 10M and 100M weights (plus one small layer, so that the minimum density
binds), each size in a fresh subprocess:

- time as a ratio to one ``torch.kthvalue`` over as many values (goal <= 2x);
- peak extra memory as a multiple of the weights' size (goal <= 1x), two ways: the process's
  peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` just before the update) minus its
  RSS before, and the peak of live tensor bytes the torch profiler records (``profile_memory``);
- the same figures for ``torch.kthvalue`` itself, and for the implementation before this
  benchmark (commit eca4b38: per-layer float copies, ``torch.cat``, one ``kthvalue``), kept below
  for comparison.

Training steps on the transformer example (:mod:`squeezer.examples.transformer`, batch 64, plus a
wider configuration), Adam, timed in interleaved rounds:

- masked (80 % global) + LSQ 4-bit student step vs a plain step of the dense model (goal <= 1.3x);
- a PQK Phase 2 mutual step (student and self-teacher, both losses, one backward) vs two plain
  steps (goal <= 1.1x);
- peak memory of a Phase 2 step vs a plain step (goal <= 1.25x): tensors alive before the step
  (parameters, gradients, optimizer state, buffers, teacher state) plus the profiler's peak of
  tensor bytes allocated during it;
- the same for a Phase 2 step ordered to keep one autograd graph alive at a time (teacher
  forward without grad, student forward and backward, teacher forward and backward): the same
  gradients for one more forward.

Results: ``benchmarks/results/scale.json`` and ``benchmarks/results/scale.png``::

    python benchmarks/scale.py                       # 1M, 10M, 100M and the training steps
    python benchmarks/scale.py --sizes 1e6 1e7 --skip-steps --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"mask_time": 2.0, "mask_memory": 1.0, "student_step": 1.3, "mutual_step": 1.1, "mutual_memory": 1.25}
SPARSITY = 0.9
MIN_DENSITY = 0.02


# --------------------------------------------------------------------------------------------------
# memory probes


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_delta(fn: Callable[[], Any]) -> tuple[float, int]:
    """``(seconds, peak RSS minus RSS before, in bytes)`` of one call of ``fn``."""
    before = _status_kb("VmRSS") or 0
    if not _reset_peak():  # fall back to ru_maxrss: only meaningful on a fresh process
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return seconds, max(0, peak - before) * 1024


def profiled_peak(fn: Callable[[], Any]) -> int:
    """Peak of tensor bytes allocated (net of frees) during one call of ``fn``, by the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


# --------------------------------------------------------------------------------------------------
# mask update


def stack(total: int) -> nn.Module:
    """Square bias-free Linear layers of about ``total`` weights, plus one 64x64 layer."""
    layers = {1_000_000: 16, 10_000_000: 40, 100_000_000: 100}.get(total, max(1, round(total / 1e6)))
    d = max(8, round(math.sqrt(total / layers)))
    with torch.no_grad():
        modules = [nn.Linear(d, d, bias=False) for _ in range(layers)] + [nn.Linear(64, 64, bias=False)]
        for m in modules:  # cheap deterministic init (randn is slow at 100M and irrelevant here)
            m.weight.normal_()
    return nn.Sequential(*modules)


def l1(_path: str, w: torch.Tensor) -> torch.Tensor:
    return w.abs()


def previous_global_masks(
    scores: dict[str, torch.Tensor], current: dict[str, torch.Tensor], sparsity: float, min_density: float
) -> dict[str, torch.Tensor]:
    """``squeezer.compress.selection.global_masks (then compress.masks)`` as of commit eca4b38 (for comparison only)."""
    from squeezer.compress.selection import _masked_scores, lowest, min_kept, pruned_count

    names = list(scores)
    sizes = [scores[n].numel() for n in names]
    total = sum(sizes)
    wide = any(scores[n].dtype == torch.float64 for n in names)
    flats = []
    already = protected = 0
    for name, n in zip(names, sizes, strict=True):
        flat = _masked_scores(scores[name], current[name])
        if wide:
            flat = flat.double()
        pruned_now = int((~current[name]).sum())
        already += pruned_now
        keep = min(min_kept(n, min_density), n - pruned_now)
        protect = ~lowest(flat, n - keep)
        flat.clamp_(max=torch.finfo(flat.dtype).max)
        flat.masked_fill_(protect, float("inf"))
        protected += keep
        flats.append(flat)
    k = min(max(pruned_count(sparsity, total), already), total - protected)
    prune = lowest(torch.cat(flats), k)
    chunks = torch.split(prune, sizes)
    return {name: (~chunk).view(scores[name].shape) for name, chunk in zip(names, chunks, strict=True)}


def previous_prune(model: nn.Module, sparsity: float) -> None:
    """``compress.prune`` as of commit eca4b38: all scores first, then the masks."""
    from squeezer import compress

    params = dict(compress.compressed_weights(model))
    scores = {path: compress.original(model, path).detach().abs() for path in params}
    current = {path: p.mask for path, p in params.items()}
    new = previous_global_masks(scores, current, sparsity, MIN_DENSITY)
    for path, p in params.items():
        p.mask.copy_(new[path])


def mask_child(total: int, method: str) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``method`` in squeezer / previous / kthvalue."""
    from squeezer import compress

    if method == "kthvalue":
        values = torch.empty(total).normal_().abs_()
        k = round(SPARSITY * total)
        seconds, rss = rss_peak_delta(lambda: torch.kthvalue(values, k))
        again = min(_timed(lambda: torch.kthvalue(values, k)) for _ in range(2 if total >= 10**8 else 4))
        return {"n": total, "seconds_first": seconds, "seconds": min(seconds, again), "rss_extra_bytes": rss,
                "tensor_peak_bytes": profiled_peak(lambda: torch.kthvalue(values, k)), "weight_bytes": 4 * total}
    model = stack(total)
    compress.attach(model, compress.Targets(types=("Linear",)))
    n = sum(p.mask.numel() for _, p in compress.compressed_weights(model))

    def update(s: float) -> Callable[[], Any]:
        if method == "previous":
            return lambda: previous_prune(model, s)
        return lambda: compress.prune(model, l1, s, scope="global", min_density=MIN_DENSITY)

    seconds, rss = rss_peak_delta(update(SPARSITY))
    zeros = sum(int((~p.mask).sum()) for _, p in compress.compressed_weights(model))
    reps = 1 if total >= 10**8 else 3
    again = min(_timed(update(SPARSITY)) for _ in range(reps))  # same sparsity: same masks, same work
    peak = profiled_peak(update(SPARSITY))
    return {"n": n, "layers": len(list(compress.compressed_weights(model))), "seconds_first": seconds,
            "seconds": min(seconds, again), "rss_extra_bytes": rss, "tensor_peak_bytes": peak,
            "weight_bytes": 4 * n, "zeros": zeros}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_child(args: list[str], threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--threads", str(threads), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def mask_benchmark(sizes: list[int], threads: int, previous: bool) -> list[dict[str, Any]]:
    rows = []
    for total in sizes:
        row: dict[str, Any] = {"size": total}
        methods = ["kthvalue", "squeezer"] + (["previous"] if previous else [])
        for method in methods:
            r = run_child(["--child", method, str(total)], threads)
            row[method] = r
            rss, tensors = r["rss_extra_bytes"] / r["weight_bytes"], r["tensor_peak_bytes"] / r["weight_bytes"]
            print(f"  {total:>11,} {method:<9} {r['seconds']:7.3f} s  rss +{rss:.2f}x  tensors +{tensors:.2f}x",
                  flush=True)
        base = row["kthvalue"]["seconds"]
        for method in methods[1:]:
            r = row[method]
            r["time_ratio"] = r["seconds"] / base
            r["rss_multiple"] = r["rss_extra_bytes"] / r["weight_bytes"]
            r["tensor_multiple"] = r["tensor_peak_bytes"] / r["weight_bytes"]
        k = row["kthvalue"]
        k["rss_multiple"] = k["rss_extra_bytes"] / k["weight_bytes"]
        k["tensor_multiple"] = k["tensor_peak_bytes"] / k["weight_bytes"]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# training steps


Step = tuple[Callable[[], None], list[Any]]  # a training step and the objects it keeps alive


def _plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step, [model, opt]


def _mutual_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kd: Any) -> Step:
    """As ``squeezer.pipeline.stages.mutual.MutualRunner.step`` (kd_weight 1, after warm-up)."""
    from squeezer.compress.teacher import SelfTeacher

    teacher = SelfTeacher(model)
    opt = torch.optim.Adam([*model.parameters(), *teacher.parameters()], 1e-3)
    ce = nn.functional.cross_entropy

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        s, t = model(x), teacher(x)
        (ce(s, y) + kd(s, t.detach()) + ce(t, y) + kd(t, s.detach())).backward()
        opt.step()

    return step, [model, teacher, opt]


def _mutual_low_memory_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, kd: Any) -> Step:
    """The same gradients with one autograd graph alive at a time, for one more (no-grad) forward."""
    from squeezer.compress.teacher import SelfTeacher

    teacher = SelfTeacher(model)
    opt = torch.optim.Adam([*model.parameters(), *teacher.parameters()], 1e-3)
    ce = nn.functional.cross_entropy

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            t_value = teacher(x)
        s = model(x)
        (ce(s, y) + kd(s, t_value)).backward()
        s_value = s.detach()
        del s
        t = teacher(x)
        (ce(t, y) + kd(t, s_value)).backward()
        opt.step()

    return step, [model, teacher, opt]


def _student(d_model: int, quantizer: Any) -> nn.Module:
    """The transformer example pruned to 80 % (global L1) with 4-bit LSQ on every target."""
    from squeezer import compress
    from squeezer.examples.transformer import make_model

    torch.manual_seed(0)
    model = make_model(d_model=d_model)
    compress.attach(model, compress.Targets(types=("Linear",), parameters=("*.in_proj_weight",)))
    compress.prune(model, l1, 0.8, min_density=MIN_DENSITY)
    compress.attach_quantizers(model, lambda _path: ("lsq", quantizer))
    return model


def step_benchmark(configs: list[tuple[int, int]], rounds: int) -> list[dict[str, Any]]:
    import squeezer
    from squeezer.examples.transformer import make_model

    registry = squeezer.load_registry()
    lsq = registry.create("quantizer", "lsq", {"bits": 4})
    hinton = registry.create("distillation_loss", "hinton", {"temperature": 4.0})
    rows = []
    for d_model, batch in configs:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(batch, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g)
        torch.manual_seed(0)
        steps = {
            "plain": _plain_step(make_model(d_model=d_model), x, y),
            "student": _plain_step(_student(d_model, lsq), x, y),
            "mutual": _mutual_step(_student(d_model, lsq), x, y, hinton),
            "mutual_low_memory": _mutual_low_memory_step(_student(d_model, lsq), x, y, hinton),
        }
        for step, _ in steps.values():
            for _ in range(3):
                step()
        times: dict[str, list[float]] = {k: [] for k in steps}
        n = max(3, round(30 * 32 * 64 / (d_model * batch)))
        for _ in range(rounds):  # interleaved, so that machine load affects all alike
            for name, (step, _) in steps.items():
                start = time.perf_counter()
                for _ in range(n):
                    step()
                times[name].append((time.perf_counter() - start) / n)
        best = {k: _median(v) for k, v in times.items()}
        memory = {k: _persistent_bytes(objs) + profiled_peak(step) for k, (step, objs) in steps.items()}
        row = {
            "d_model": d_model, "batch": batch,
            "weights": sum(p.numel() for p in make_model(d_model=d_model).parameters()),
            "step_seconds": best,
            "student_vs_plain": best["student"] / best["plain"],
            "mutual_vs_two_plain": best["mutual"] / (2 * best["plain"]),
            "mutual_vs_two_student": best["mutual"] / (2 * best["student"]),
            "memory_bytes": memory,
            "mutual_memory_vs_plain": memory["mutual"] / memory["plain"],
            "mutual_memory_vs_student": memory["mutual"] / memory["student"],
            "mutual_low_memory_vs_two_plain": best["mutual_low_memory"] / (2 * best["plain"]),
            "mutual_low_memory_memory_vs_plain": memory["mutual_low_memory"] / memory["plain"],
            "profile": {k: _top_ops(steps[k][0]) for k in ("plain", "student", "mutual")},
        }
        print(f"  d_model={d_model} batch={batch}: plain {best['plain'] * 1e3:.2f} ms, student "
              f"{row['student_vs_plain']:.2f}x, mutual {row['mutual_vs_two_plain']:.2f}x of two plain, "
              f"memory {row['mutual_memory_vs_plain']:.2f}x; one graph at a time: "
              f"{row['mutual_low_memory_vs_two_plain']:.2f}x, memory {row['mutual_low_memory_memory_vs_plain']:.2f}x",
              flush=True)
        rows.append(row)
    return rows


def _median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2]


def _persistent_bytes(objs: list[Any]) -> int:
    """Bytes of the distinct tensors a model / teacher / optimizer holds between steps."""
    seen: dict[int, int] = {}

    def add(t: Any) -> None:
        if isinstance(t, torch.Tensor):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    for obj in objs:
        if isinstance(obj, nn.Module):
            for t in [*obj.parameters(), *obj.buffers()]:
                add(t)
                add(t.grad)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for t in state.values():
                    add(t)
    return sum(seen.values())


def _top_ops(step: Callable[[], None], top: int = 8) -> dict[str, Any]:
    """Where a step's time goes: the ops with the most self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages)
    rows = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "ops_per_step": sum(e.count for e in averages) / 5,
        "self_cpu_ms_per_step": total / 5e3,
        "top": [{"op": e.key, "calls_per_step": e.count / 5, "share": e.self_cpu_time_total / total} for e in rows],
    }


# --------------------------------------------------------------------------------------------------
# report


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["mask_update"]
    fig, axes = plt.subplots(1, 3 if result.get("steps") else 2, figsize=(15 if result.get("steps") else 10, 4))
    sizes = [r["size"] for r in rows]
    for method, style in (("squeezer", "o-"), ("previous", "s--")):
        if all(method in r for r in rows):
            axes[0].plot(sizes, [r[method]["time_ratio"] for r in rows], style, label=method)
            axes[1].plot(sizes, [r[method]["rss_multiple"] for r in rows], style, label=f"{method} (RSS)")
            axes[1].plot(sizes, [r[method]["tensor_multiple"] for r in rows], style, alpha=0.5,
                         label=f"{method} (tensors)")
    axes[1].plot(sizes, [r["kthvalue"]["rss_multiple"] for r in rows], ":", color="gray", label="torch.kthvalue (RSS)")
    axes[0].axhline(GOALS["mask_time"], color="red", lw=0.8, label="goal")
    axes[1].axhline(GOALS["mask_memory"], color="red", lw=0.8, label="goal")
    axes[0].set(xscale="log", xlabel="weights", ylabel="time / torch.kthvalue", title="global mask update: time")
    axes[1].set(xscale="log", xlabel="weights", ylabel="peak extra memory / weights",
                title="global mask update: memory")
    for ax in axes[:2]:
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    if result.get("steps"):
        ax = axes[2]
        labels = [f"d={r['d_model']}, b={r['batch']}" for r in result["steps"]]
        keys = [("student_vs_plain", "student step / plain", "student_step"),
                ("mutual_vs_two_plain", "mutual step / 2 plain", "mutual_step"),
                ("mutual_memory_vs_plain", "mutual memory / plain", "mutual_memory")]
        width = 0.8 / len(labels)
        for i, (label, r) in enumerate(zip(labels, result["steps"], strict=True)):
            ax.bar([j + i * width for j in range(len(keys))], [r[k] for k, _, _ in keys], width, label=label)
        for j, (_, _, goal) in enumerate(keys):
            ax.hlines(GOALS[goal], j - 0.1, j + 0.9 - 0.1, color="red", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], [t for _, t, _ in keys], fontsize=8)
        ax.set(title="transformer example: training steps (red: goals)", ylabel="ratio")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-previous", action="store_true", help="do not measure the previous implementation")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds of the training steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(mask_child(int(float(args.child[1])), args.child[0])))
        return
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": args.threads, "python": platform.python_version()},
        "goals": GOALS,
        "mask_update_config": {"importance": "l1", "scope": "global", "sparsity": SPARSITY,
                               "min_density": MIN_DENSITY, "layers": "square Linear stacks + one 64x64"},
    }
    print("mask update (global L1, min density 0.02):", flush=True)
    result["mask_update"] = mask_benchmark([int(s) for s in args.sizes], args.threads, not args.skip_previous)
    if not args.skip_steps:
        print("training steps (transformer example):", flush=True)
        result["steps"] = step_benchmark([(32, 64), (128, 256)], args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
