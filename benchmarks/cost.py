"""Step-time cost of squeezer's training steps, as ratios to a plain FP32 step of the same model and batch.

- masked + LSQ: one training step of the pruned model with LSQ fake quantizers (goal <= 1.3x a plain step);
- mutual: one PQK Phase-2 step, as ``squeezer.pipeline.stages.mutual`` does it: student and
  ``SelfTeacher`` forward, cross-entropy + Hinton KD each way (the other's logits detached), the
  losses summed, one backward and one optimizer step (goal <= 1.1x two plain steps).

Models: the digits CNN (width 16, batch 64: the bundled example), the digits CNN at width 64 with
batch 256, and an MLP 784-1024-1024-10 on random data (batch 256), where per-op overhead matters
less. Median over many timed steps after a warm-up, the variants interleaved in rotating order to
cancel drift, one fixed batch in memory (no data loading). If a goal is missed, ``torch.profiler``
records where the time goes. Writes ``results/cost.json`` and regenerates ``results/RESULTS.md``.

    python benchmarks/cost.py
    python benchmarks/cost.py --steps 5 --warmup 2 --models digits16   # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LSQ_GOAL, MUTUAL_GOAL = 1.3, 1.1


def digits_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    from squeezer.examples.digits import digits_tensors

    train, _ = digits_tensors()
    x, y = train.tensors
    return x[:batch].clone(), y[:batch].clone()


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def models() -> dict[str, tuple[Callable[[], nn.Module], int, Callable[[int], tuple[torch.Tensor, torch.Tensor]]]]:
    from squeezer.examples.digits import make_model

    def random_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)

    return {
        "digits16": (lambda: make_model(16), 64, digits_batch),
        "digits64": (lambda: make_model(64), 256, digits_batch),
        "mlp1024": (make_mlp, 256, random_batch),
    }


MODEL_LABELS = {"digits16": "digits CNN, width 16", "digits64": "digits CNN, width 64",
                "mlp1024": "MLP 784-1024-1024-10"}


def compressed(base: nn.Module, sparsity: float, bits: int, registry: Any) -> nn.Module:
    """A copy of ``base`` pruned by global L1 magnitude to ``sparsity`` with LSQ quantizers
    (``bits``; the first compressed weight 8-bit, as in the bundled recipe)."""
    from squeezer import compress

    model = copy.deepcopy(base)
    compress.attach(model)
    compress.prune(model, lambda _path, w: w.abs(), sparsity, scope="global", min_density=0.02)
    first = next(path for path, _ in compress.compressed_weights(model))
    q = registry.create("quantizer", "lsq", {"bits": bits})
    q8 = registry.create("quantizer", "lsq", {"bits": 8})
    compress.attach_quantizers(model, lambda path: ("lsq", q8 if path == first else q))
    return model


class Variant:
    def __init__(self, name: str, step: Callable[[], None]) -> None:
        self.name, self.step, self.times = name, step, []


def build_variants(factory: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, sparsity: float,
                   bits: int) -> dict[str, Variant]:
    from squeezer.compress.teacher import SelfTeacher
    from squeezer.engine import split_parameters
    from squeezer.plugin_manager import load_registry

    registry = load_registry()
    kd = registry.create("distillation_loss", "hinton", {"temperature": 4.0})
    ce = nn.functional.cross_entropy
    torch.manual_seed(0)
    base = factory()

    plain = copy.deepcopy(base).train()
    opt_p = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step() -> None:
        opt_p.zero_grad(set_to_none=True)
        loss = ce(plain(x), y)
        float(loss.detach())  # the runner reads every loss (check_loss)
        loss.backward()
        opt_p.step()

    lsq = compressed(base, sparsity, bits, registry).train()
    opt_l = torch.optim.Adam(lsq.parameters(), lr=1e-3)

    def lsq_step() -> None:
        opt_l.zero_grad(set_to_none=True)
        loss = ce(lsq(x), y)
        float(loss.detach())
        loss.backward()
        opt_l.step()

    student = compressed(base, sparsity, bits, registry).train()
    teacher = SelfTeacher(student, ("norm",), True).train()
    originals, quantizer, others = split_parameters(student)
    opt_m = torch.optim.Adam([{"params": originals, "weight_decay": 0.0}, {"params": quantizer, "weight_decay": 0.0},
                              {"params": others},
                              {"params": list(teacher.parameters())}], lr=1e-3)

    def mutual_step() -> None:  # squeezer.pipeline.stages.mutual.MutualRunner.step after warm-up
        opt_m.zero_grad(set_to_none=True)
        s_logits = student(x)
        t_logits = teacher(x)
        loss_s = ce(s_logits, y) + kd(s_logits, t_logits.detach())
        loss_t = ce(t_logits, y) + kd(t_logits, s_logits.detach())
        loss = loss_s + loss_t
        float(loss.detach()), float(loss_s.detach()), float(loss_t.detach())
        loss.backward()
        opt_m.step()

    return {"plain": Variant("plain", plain_step), "lsq": Variant("lsq", lsq_step),
            "mutual": Variant("mutual", mutual_step)}


def time_variants(variants: dict[str, Variant], warmup: int, steps: int) -> None:
    order = list(variants.values())
    for i in range(warmup + steps):
        k = i % len(order)
        for v in order[k:] + order[:k]:  # rotate the order every iteration
            t0 = time.perf_counter()
            v.step()
            dt = time.perf_counter() - t0
            if i >= warmup:
                v.times.append(dt)


def profile(variants: dict[str, Variant], names: list[str], steps: int) -> dict[str, Any]:
    """Self CPU time per step of every op (>= 5 us) of each variant in ``names`` and of the plain step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out: dict[str, Any] = {"steps": steps}
    for name in dict.fromkeys(["plain", *names]):
        v = variants[name]
        v.step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                v.step()
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in rows) / 1000 / steps
        out[name] = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1000 / steps, "calls": e.count / steps}
                     for e in rows if e.self_cpu_time_total / 1000 / steps >= 0.005]
        out[f"{name}_total_ms"] = total
    if "mutual" in names:  # the mutual step is compared with two plain steps
        out["plain2"] = [{**o, "self_ms": 2 * o["self_ms"], "calls": 2 * o["calls"]} for o in out["plain"]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per variant and model")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per variant first")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--models", default="digits16,digits64,mlp1024", help="comma-separated subset")
    ap.add_argument("--profile-steps", type=int, default=20, help="steps profiled when a goal is missed")
    ap.add_argument("--out", type=Path, default=RESULTS / "cost.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    table = models()
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(chosen) - set(table)
    if unknown:
        raise SystemExit(f"--models: unknown {sorted(unknown)} (known: {', '.join(table)})")
    rows = []
    for key in chosen:
        factory, batch, data = table[key]
        x, y = data(batch)
        t0 = time.perf_counter()
        variants = build_variants(factory, x, y, args.sparsity, args.bits)
        time_variants(variants, args.warmup, args.steps)
        med = {k: statistics.median(v.times) * 1000 for k, v in variants.items()}
        row: dict[str, Any] = {
            "model": key, "name": MODEL_LABELS[key], "batch": batch,
            "plain_ms": med["plain"], "lsq_ms": med["lsq"], "mutual_ms": med["mutual"],
            "ratio_lsq": med["lsq"] / med["plain"], "ratio_mutual": med["mutual"] / (2 * med["plain"]),
            "iqr_ms": {k: _iqr(v.times) for k, v in variants.items()},
        }
        missed = ([] if row["ratio_lsq"] <= LSQ_GOAL else ["lsq"]) + \
                 ([] if row["ratio_mutual"] <= MUTUAL_GOAL else ["mutual"])
        if missed and args.profile_steps > 0:
            row["profile"] = profile(variants, missed, args.profile_steps)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{MODEL_LABELS[key]:24s} batch {batch:4d}: plain {med['plain']:8.2f} ms, masked+LSQ "
              f"{med['lsq']:8.2f} ms ({row['ratio_lsq']:.2f}x), mutual {med['mutual']:8.2f} ms "
              f"({row['ratio_mutual']:.2f}x of 2 plain)  [{row['seconds']:.0f}s]", flush=True)

    meta = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads, "sparsity": args.sparsity,
            "bits": args.bits, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "smoke": args.steps < 50,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "models": rows}, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    sys.path.insert(0, str(HERE))
    import report

    report.write_all(args.out.parent)
    return 0


def _iqr(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return [q[0] * 1000, q[2] * 1000]


if __name__ == "__main__":
    sys.exit(main())
