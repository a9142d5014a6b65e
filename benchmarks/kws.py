"""PQK accuracy benchmark on the bundled keyword-spotting example (:mod:`squeezer.examples.kws`).

A DS-CNN on synthetic speech-command-like features (10 keywords + silence + unknown; generated in
code, not the Speech Commands data set). For each (target sparsity, weight bits) configuration and
each seed, three methods get the same total budget of training epochs, the bundled
``kws_pqk.toml``'s (dense + pruning rounds x epochs per round + Phase 2 warm-up + mutual; a
Phase-2 mutual epoch counts as one, it sees the data once):

- ``dense``: FP32, trained for the whole budget (plain torch, as ``benchmarks/accuracy.py`` does;
  does not depend on the config);
- ``squeezer_phase1``: the recipe with the Phase 2 ``mutual`` stage replaced by a ``train`` stage of
  the same number of epochs and learning rate (the ablation that shows what Phase 2 adds);
- ``squeezer_pqk``: the recipe with the target sparsity and bits changed (``@first`` stays 8-bit).

The seed is the run's (initialization, shuffling); the generated data is the recipe's (data seed 0)
for every run. Size accounting and the training loop of the dense reference are
``benchmarks/accuracy.py``'s, imported. Results: ``results/kws.json`` (rewritten after every run)
and ``results/KWS.md``.

    python benchmarks/kws.py --seeds 3 --jobs 2
    python benchmarks/kws.py --seeds 1 --epochs-scale 0.1 --configs 0.9:4 --out /tmp/smoke/kws.json  # smoke
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
import tomllib
import traceback
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # accuracy.py and report.py, also in spawned workers

from accuracy import (  # noqa: E402
    _write_json,
    dense_layers,
    evaluate,
    others,
    parse_configs,
    run_recipe,
    size_bytes,
    squeezer_recipe,
    train_epochs,
)
from report import _by_seed, _cfg_label, _key, _ms, _ok, _paired  # noqa: E402

RESULTS = HERE / "results"
DEFAULT_CONFIGS = ((0.70, 4), (0.80, 4), (0.80, 2))
METHODS = ("dense", "squeezer_phase1", "squeezer_pqk")
LABELS = {
    "dense": "dense FP32",
    "squeezer_phase1": "squeezer Phase 1 only (+ fine-tune)",
    "squeezer_pqk": "squeezer PQK (Phase 1 + 2)",
}


def recipe_path() -> Path:
    import squeezer

    return Path(squeezer.__file__).resolve().parent / "recipes" / "kws_pqk.toml"


def bundled_recipe() -> dict[str, Any]:
    return tomllib.loads(recipe_path().read_text(encoding="utf-8"))


def budget(scale: float) -> dict[str, Any]:
    """Epochs, learning rates and factory options from ``kws_pqk.toml``, epochs scaled by ``scale``."""
    data = bundled_recipe()
    dense, prune, mutual = data["stages"]
    assert (dense["type"], prune["type"], mutual["type"]) == ("train", "prune", "mutual"), "unexpected kws_pqk.toml"

    def sc(e: int, minimum: int = 1) -> int:
        return max(minimum, round(e * scale))

    lr = float(data["training"]["lr"])
    b = {
        "dense_epochs": sc(dense["epochs"]),
        "rounds": int(prune["scheduler"]["rounds"]),
        "epochs_per_round": sc(prune["epochs_per_round"]),
        "warmup_epochs": sc(mutual.get("warmup_epochs", 1), 0),
        "mutual_epochs": sc(mutual["epochs"]),
        "lr_dense": float(dense.get("lr", lr)),
        "lr_prune": float(prune.get("lr", lr)),
        "lr_phase2": float(mutual.get("lr", lr)),
        "model": {k: v for k, v in data["model"].items() if k != "factory"},
        "data": {k: v for k, v in data["data"].items() if k != "factory"},
    }
    b["phase2_epochs"] = b["warmup_epochs"] + b["mutual_epochs"]
    b["total_epochs"] = b["dense_epochs"] + b["rounds"] * b["epochs_per_round"] + b["phase2_epochs"]
    return b


def fp32_bytes(model: torch.nn.Module) -> float:
    """The dense FP32 model's size: 4 bytes per parameter and floating-point buffer."""
    layers = dense_layers(model)
    return size_bytes(layers, others(model, [name for name, *_ in layers]))


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------
def run_dense(seed: int, b: dict[str, Any]) -> dict[str, Any]:
    from squeezer.examples.kws import make_loaders, make_model

    torch.manual_seed(seed)
    model = make_model(**b["model"])
    train, val = make_loaders(**b["data"])
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_dense"])
    train_epochs(model, train, opt, b["lr_dense"], b["total_epochs"])
    size = fp32_bytes(model)
    return {"accuracy": evaluate(model, val), "sparsity": 0.0, "size_bytes": size, "fp32_bytes": size,
            "epochs": b["total_epochs"]}


def run_squeezer(seed: int, b: dict[str, Any], sparsity: float, bits: int, phase2: bool) -> dict[str, Any]:
    from squeezer.examples.kws import make_model

    result, stage_seconds, teacher_acc = run_recipe(
        lambda out: squeezer_recipe(b, sparsity, bits, phase2, out, data=bundled_recipe(), name="kws_pqk.toml"),
        seed)
    file_bytes = int(result.report.file_bytes) if result.report is not None else None
    model = make_model(**b["model"])
    stats = [(path, numel, nnz, bits_, model.get_parameter(path).shape[0])
             for path, numel, nnz, bits_ in result.layers]
    out = {"accuracy": result.accuracy, "dense_accuracy": result.dense_accuracy, "sparsity": result.sparsity,
           "size_bytes": size_bytes(stats, others(model, [s[0] for s in stats])), "fp32_bytes": fp32_bytes(model),
           "artifact_bytes": file_bytes, "stage_accuracy": result.record.stage_accuracy,
           "stage_seconds": stage_seconds, "layer_density": {s[0]: s[2] / s[1] for s in stats},
           "epochs": b["total_epochs"]}
    if teacher_acc:
        out["teacher_accuracy"] = teacher_acc[-1]
    return out


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(task["threads"])
    b, method, seed, cfg = task["budget"], task["method"], task["seed"], task["config"]
    start = time.perf_counter()
    row: dict[str, Any] = {"method": method, "config": cfg, "seed": seed}
    try:
        if method == "dense":
            row.update(run_dense(seed, b))
        else:
            row.update(run_squeezer(seed, b, cfg["sparsity"], cfg["bits"], phase2=method == "squeezer_pqk"))
    except Exception as exc:  # one failed run must not lose the others
        row.update({"accuracy": None, "size_bytes": None, "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8)})
    row["seconds"] = time.perf_counter() - start
    return row


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def report(data: dict[str, Any]) -> str:
    """``KWS.md`` from ``kws.json``'s contents."""
    meta, runs = data["meta"], data["runs"]
    good = _ok(runs)
    b = meta["budget"]
    lines = ["# Keyword spotting benchmark", "",
             "Generated by `benchmarks/kws.py` (see `benchmarks/README.md` and `docs/kws.md`).", ""]
    if meta.get("smoke"):
        lines += [f"> **SMOKE RUN** (epochs scale {meta['epochs_scale']}, {meta['seeds']} seed(s)): the figures "
                  "below only show that the benchmark runs.", ""]
    if not meta.get("complete", True):
        lines += ["> **Incomplete**: the run was interrupted or is still going; only finished runs are shown.", ""]
    lines += [
        f"DS-CNN (`squeezer.examples.kws:make_model`, {b['model']}) on synthetic speech-command-like "
        f"features ({b['data']}): 12 classes, validation speakers disjoint from training speakers. "
        "The data is generated in code; it is not Speech Commands.",
        "",
        f"Same budget for every method: {b['total_epochs']} training epochs (squeezer: dense "
        f"{b['dense_epochs']}, prune {b['rounds']} rounds x {b['epochs_per_round']}, Phase 2 "
        f"{b['warmup_epochs']} warm-up + {b['mutual_epochs']} mutual; a mutual epoch counts as one). "
        f"{meta['seeds']} seed(s) per method and config (the run's seed; the data is the same); torch "
        f"{meta.get('torch')}, {meta.get('threads')} thread(s) per run, {meta.get('jobs')} job(s) in parallel "
        f"on {meta.get('cpus')} CPU(s); wall time {meta.get('wall_seconds', 0) / 60:.1f} min.",
        "",
        "- **dense FP32**: trained for the whole budget (one run per seed, shared by all configs).",
        "- **squeezer Phase 1 only**: `kws_pqk.toml` with the `mutual` stage replaced by a `train` stage of the "
        "same epochs and learning rate.",
        "- **squeezer PQK**: `kws_pqk.toml` with the target sparsity and bits changed (`@first` stays 8-bit).",
        "",
        "*Size*: `nnz * bits + numel * H(density)` per compressed weight, plus an fp32 scale per output channel "
        "when quantized, plus fp32 for everything else (as in `benchmarks/accuracy.py`); for dense FP32 it is "
        "4 bytes per value. *Artifact*: the exported `model.safetensors` file; *vs FP32*: dense FP32 size / "
        "artifact size.",
        "",
        "| config | method | runs | accuracy (%) | teacher (%) | size (bytes) | artifact (bytes) | vs FP32 "
        "| seconds/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({_key(r["config"]) for r in runs if r["config"] is not None}, key=lambda k: (k[0], -k[1]))
    methods = [m for m in LABELS if any(r["method"] == m for r in runs)]
    for key in keys:
        for m in methods:
            rs = list(_by_seed(good, m, key).values())
            n_all = len(_by_seed(runs, m, key))
            if not n_all:
                continue
            art = [r["artifact_bytes"] for r in rs if r.get("artifact_bytes")]
            ratio = [r["fp32_bytes"] / r["artifact_bytes"] for r in rs if r.get("artifact_bytes")]
            teacher = [r["teacher_accuracy"] for r in rs if r.get("teacher_accuracy") is not None]
            lines.append(
                f"| {_cfg_label(key)} | {LABELS[m]} | {len(rs)}/{n_all} | {_ms([r['accuracy'] for r in rs], 100)} | "
                f"{_ms(teacher, 100) if teacher else '—'} | {_ms([r['size_bytes'] for r in rs], 1, 0)} | "
                f"{_ms(art, 1, 0) if art else '—'} | {_ms(ratio, 1, 1) + 'x' if ratio else '—'} | "
                f"{_ms([r['seconds'] for r in rs], 1, 1)} |")
    lines += ["", "Differences in accuracy points, paired by seed (mean ± std over seeds):", "",
              "| config | PQK − dense | PQK − Phase 1 only | Phase 1 only − dense |", "|---|---|---|---|"]
    for key in keys:
        pqk, p1, dense = (_by_seed(good, m, key) for m in ("squeezer_pqk", "squeezer_phase1", "dense"))
        lines.append(f"| {_cfg_label(key)} | {_ms(_paired(pqk, dense), 100)} | {_ms(_paired(pqk, p1), 100)} | "
                     f"{_ms(_paired(p1, dense), 100)} |")
    stage = [r for r in good if r.get("dense_accuracy") is not None]
    if stage:
        lines += ["", f"Accuracy of the recipe's own dense stage ({b['dense_epochs']} epochs, before pruning), over "
                  f"all squeezer runs: {_ms([r['dense_accuracy'] for r in stage], 100)} %."]
    failed = [r for r in runs if r.get("error")]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['method']} {r['config']} seed {r['seed']}: `{r['error']}`" for r in failed]
    return "\n".join(lines) + "\n"


def write_report(json_path: Path, data: dict[str, Any]) -> Path:
    path = json_path.with_name("KWS.md") if json_path.name == "kws.json" else json_path.with_suffix(".md")
    path.write_text(report(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per method and config (0..N-1)")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="multiply every epoch count (each at least 1; Phase 2 warm-up may become 0)")
    ap.add_argument("--configs", default=None, help="comma-separated SPARSITY:BITS, e.g. '0.9:4,0.9:2' "
                    f"(default: {','.join(f'{s}:{b}' for s, b in DEFAULT_CONFIGS)})")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--out", type=Path, default=RESULTS / "kws.json")
    args = ap.parse_args(argv)

    configs = parse_configs(args.configs) if args.configs else list(DEFAULT_CONFIGS)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}")
    b = budget(args.epochs_scale)
    common = {"threads": args.threads, "budget": b}
    tasks: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        if "dense" in methods:
            tasks.append({**common, "method": "dense", "seed": seed, "config": None})
        for s, bits in configs:
            tasks += [{**common, "method": m, "seed": seed, "config": {"sparsity": s, "bits": bits}}
                      for m in methods if m != "dense"]
    order = {"squeezer_pqk": 0, "squeezer_phase1": 1, "dense": 2}  # longest first, for packing
    tasks.sort(key=lambda t: order[t["method"]])
    meta = {
        "budget": b, "epochs_scale": args.epochs_scale, "seeds": args.seeds,
        "configs": [{"sparsity": s, "bits": bits} for s, bits in configs], "methods": methods,
        "threads": args.threads, "jobs": args.jobs, "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "smoke": args.epochs_scale != 1.0, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"{len(tasks)} runs, budget {b['total_epochs']} epochs each (dense {b['dense_epochs']}, prune "
          f"{b['rounds']}x{b['epochs_per_round']}, phase 2 {b['warmup_epochs']}+{b['mutual_epochs']}), "
          f"jobs={args.jobs}, threads={args.threads}", flush=True)
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
        data = {"meta": {**meta, "complete": len(rows) == len(tasks),
                         "wall_seconds": time.perf_counter() - t0}, "runs": rows}
        _write_json(args.out, data)
        write_report(args.out, data)

    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_task, tasks):
                record(row)
    else:
        for task in tasks:
            record(run_task(task))
    meta.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), wall_seconds=time.perf_counter() - t0, complete=True)
    _write_json(args.out, {"meta": meta, "runs": rows})
    print(f"wrote {args.out} and {write_report(args.out, {'meta': meta, 'runs': rows})}")
    failed = [r for r in rows if r.get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
