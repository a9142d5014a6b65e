"""Write ``results/RESULTS.md`` (and ``results/accuracy.png``) from ``accuracy.json`` and ``cost.json``.

Both benchmark scripts call :func:`write_all` when they finish, so either can be rerun on its own;
``python benchmarks/report.py`` regenerates the report from the committed json files.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
METHOD_LABELS = {
    "dense": "dense FP32",
    "torch_baseline": "plain PyTorch (prune + FakeQuantize QAT)",
    "squeezer_phase1": "squeezer Phase 1 only (+ fine-tune)",
    "squeezer_pqk": "squeezer PQK (Phase 1 + 2)",
}
STYLE = {  # marker, colour
    "dense": ("*", "black"),
    "torch_baseline": ("s", "tab:orange"),
    "squeezer_phase1": ("^", "tab:blue"),
    "squeezer_pqk": ("o", "tab:green"),
}
GOAL_CONFIG = (0.98, 2)
LSQ_GOAL, MUTUAL_GOAL = 1.3, 1.1


#: a heading containing this marks a section a person wrote: regenerating the file keeps it
HAND_WRITTEN = "(written by hand"


def keep_hand_written(path: Path, generated: str) -> str:
    """``generated`` followed by the hand-written sections of the file now at ``path`` (each from
    its ``## ... (written by hand ...)`` heading to the next ``## `` heading or the end), so
    rerunning a benchmark does not erase the analysis written for the previous run; the kept
    sections describe that run, which the heading of each says."""
    if not path.exists():
        return generated
    kept: list[str] = []
    keeping = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            keeping = HAND_WRITTEN in line and line not in generated
        if keeping:
            kept.append(line)
    if not kept:
        return generated
    return generated.rstrip("\n") + "\n\n" + "\n".join(kept).rstrip("\n") + "\n"


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` (std only with two or more values)."""
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _key(cfg: dict[str, Any] | None) -> tuple[float, int] | None:
    return None if cfg is None else (round(float(cfg["sparsity"]), 4), int(cfg["bits"]))


def _cfg_label(key: tuple[float, int]) -> str:
    return f"{key[0]:.2f} sparsity, {key[1]}-bit"


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("accuracy") is not None and not r.get("error")]


def _by_seed(runs: list[dict[str, Any]], method: str, key: tuple[float, int] | None) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in runs if r["method"] == method and (method == "dense" or _key(r["config"]) == key)}


def _paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> list[float]:
    return [a[s]["accuracy"] - b[s]["accuracy"] for s in sorted(set(a) & set(b))]


def accuracy_section(data: dict[str, Any]) -> list[str]:
    meta, runs = data["meta"], data["runs"]
    good = _ok(runs)
    b = meta["budget"]
    lines = ["## Accuracy (the bundled digits CNN, default width)", ""]
    if meta.get("smoke"):
        lines += [f"> **SMOKE RUN** (epochs scale {meta['epochs_scale']}, {meta['seeds']} seed(s)): "
                  "the figures below only show that the benchmark runs; they say nothing about the goals.", ""]
    if not meta.get("complete", True):
        lines += ["> **Incomplete**: the run was interrupted; only finished runs are shown.", ""]
    lines += [
        f"Same budget for every method: {b['total_epochs']} training epochs "
        f"(squeezer: dense {b['dense_epochs']}, prune {b['rounds']} rounds x {b['epochs_per_round']}, "
        f"Phase 2 {b['warmup_epochs']} warm-up + {b['mutual_epochs']} mutual; a mutual epoch counts as one). "
        f"{meta['seeds']} seed(s) per method and config; torch {meta.get('torch')}, "
        f"{meta.get('threads')} thread(s) per run, {meta.get('jobs')} job(s). Squeezer prune `min_density`: "
        f"{b.get('min_density') if b.get('min_density') is not None else 'the recipe default'} "
        "(the bundled recipe prunes globally by LAMP; the plain-PyTorch baseline uses torch's L1Unstructured).",
        "",
        "- **dense FP32**: trained for the whole budget (one run per seed, shared by all configs).",
        "- **plain PyTorch**: dense, then `torch.nn.utils.prune.global_unstructured` (L1, geometric schedule, "
        "same rounds and epochs) with per-channel `FakeQuantize` weight QAT from the first round "
        "(first layer 8-bit), then QAT fine-tuning for the Phase-2 epochs.",
        "- **squeezer Phase 1 only**: the bundled recipe with the `mutual` stage replaced by a `train` stage "
        "of the same epochs and learning rate.",
        "- **squeezer PQK**: the bundled recipe (target sparsity and bits changed, `@first` stays 8-bit).",
        "",
        "Model size (same formula for every method): `nnz * bits + numel * H(density)` per compressed weight, "
        "plus an fp32 scale per output channel when quantized, plus fp32 for every other parameter and "
        "normalization statistic. *Artifact* is squeezer's exported `model.safetensors` file size.",
        "",
    ]
    keys = sorted({_key(r["config"]) for r in runs if r["config"] is not None}, key=lambda k: (k[0], -k[1]))
    methods = [m for m in METHOD_LABELS if any(r["method"] == m for r in runs)]
    lines += ["| config | method | runs | accuracy (%) | size (bytes) | artifact (bytes) | sparsity | seconds/run |",
              "|---|---|---|---|---|---|---|---|"]
    for key in keys:
        for m in methods:
            rs = list(_by_seed(good, m, key).values())
            n_all = len(_by_seed(runs, m, key))
            if not n_all:
                continue
            art = [r["artifact_bytes"] for r in rs if r.get("artifact_bytes")]
            lines.append(
                f"| {_cfg_label(key)} | {METHOD_LABELS[m]} | {len(rs)}/{n_all} | "
                f"{_ms([r['accuracy'] for r in rs], 100)} | {_ms([r['size_bytes'] for r in rs], 1, 0)} | "
                f"{_ms(art, 1, 0) if art else '—'} | {_ms([r.get('sparsity', 0.0) for r in rs], 1, 4)} | "
                f"{_ms([r['seconds'] for r in rs], 1, 1)} |")
    lines += ["", "Differences in accuracy points, paired by seed (mean ± std over seeds):", "",
              "| config | PQK − dense | PQK − plain PyTorch | PQK − Phase 1 only |", "|---|---|---|---|"]
    deltas: dict[tuple[float, int], dict[str, list[float]]] = {}
    for key in keys:
        pqk = _by_seed(good, "squeezer_pqk", key)
        d = {other: _paired(pqk, _by_seed(good, other, key)) for other in ("dense", "torch_baseline",
                                                                         "squeezer_phase1")}
        deltas[key] = d
        lines.append(f"| {_cfg_label(key)} | " + " | ".join(_ms(d[o], 100) for o in
                                                            ("dense", "torch_baseline", "squeezer_phase1")) + " |")
    lines += ["", f"### Goals at {_cfg_label(GOAL_CONFIG)}", ""]
    goal = deltas.get(GOAL_CONFIG)
    checks = [("PQK within 2 points of dense", "dense", lambda v: v >= -0.02),
              ("PQK at least 3 points above the plain-PyTorch baseline", "torch_baseline", lambda v: v >= 0.03),
              ("PQK above the Phase-1 ablation", "squeezer_phase1", lambda v: v > 0)]
    for text, other, test in checks:
        values = goal.get(other, []) if goal else []
        if not values:
            lines.append(f"- {text}: **not measured** (no paired runs at this config).")
            continue
        mean = statistics.fmean(values)
        verdict = "met" if test(mean) else "NOT met"
        if meta.get("smoke"):
            verdict += " (smoke run: not conclusive)"
        spread = f", std {statistics.stdev(values) * 100:.2f}" if len(values) > 1 else ""
        lines.append(f"- {text}: **{verdict}** — mean difference {mean * 100:+.2f} points over "
                     f"{len(values)} seed(s){spread}.")
    uniform = sorted({_cfg_label(_key(r["config"])) for r in good if r["method"].startswith("squeezer")
                      and r.get("layer_density") and max(r["layer_density"].values())
                      - min(r["layer_density"].values()) < 0.002})
    if uniform:
        lines += ["", f"**Note**: at {', '.join(uniform)} every squeezer layer ended at the same density: the "
                  "prune stage's `min_density` is binding (target sparsity ≥ 1 − min_density), so global pruning "
                  "degenerates into uniform per-layer pruning (the first conv keeps only a few of its 144 weights). "
                  "Rerun with `--min-density` to explore."]
    failed = [r for r in runs if r.get("error")]
    if failed:
        lines += ["", "### Failed runs", ""]
        lines += [f"- {r['method']} {r['config']} seed {r['seed']}: `{r['error']}`" for r in failed]
    broken = [r for r in good if r.get("pruned_stay_zero") is False]
    if broken:
        lines += ["", f"**Warning**: {len(broken)} baseline run(s) had pruned weights that were not 0 after "
                  "fake quantization."]
    lines += ["", "![accuracy vs model size](accuracy.png)", ""]
    return lines


def plot_accuracy(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install 'squeezer[bench]'); skipping the plot", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = _ok(data["runs"])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for m, (marker, color) in STYLE.items():
        rs = [r for r in good if r["method"] == m]
        if not rs:
            continue
        ax.scatter([r["size_bytes"] for r in rs], [100 * r["accuracy"] for r in rs], marker=marker, color=color,
                   alpha=0.25, s=18)
        groups: dict[Any, list[dict[str, Any]]] = {}
        for r in rs:
            groups.setdefault(_key(r["config"]), []).append(r)
        for i, (key, g) in enumerate(sorted(groups.items(), key=lambda kv: kv[0] or (0, 0))):
            acc = [100 * r["accuracy"] for r in g]
            size = statistics.fmean(r["size_bytes"] for r in g)
            ax.errorbar(size, statistics.fmean(acc), yerr=statistics.stdev(acc) if len(acc) > 1 else None,
                        marker=marker, color=color, markersize=9, capsize=3, linestyle="none",
                        label=METHOD_LABELS[m] if i == 0 else None)
            if key is not None and m == "squeezer_pqk":
                ax.annotate(f"{key[0]:.2f}/{key[1]}b", (size, statistics.fmean(acc)), textcoords="offset points",
                            xytext=(6, -12), fontsize=8, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("model size (bytes, log scale; same formula for every method)")
    ax.set_ylabel("validation accuracy (%)")
    title = "PQK on digits: accuracy vs model size"
    if data["meta"].get("smoke"):
        title += " (SMOKE RUN)"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def cost_section(data: dict[str, Any]) -> list[str]:
    meta = data["meta"]
    lines = ["## Cost (time of one training step)", ""]
    if meta.get("smoke"):
        lines += [f"> **SMOKE RUN** ({meta['steps']} timed steps): not conclusive.", ""]
    lines += [
        f"Median of {meta['steps']} timed steps per variant after {meta['warmup']} warm-up steps, variants "
        f"interleaved (rotating order) to cancel drift; fixed batch in memory (no data loading); CPU, "
        f"torch {meta.get('torch')}, {meta['threads']} thread(s). Masked + LSQ: "
        f"{meta['sparsity']:.2f} sparsity, {meta['bits']}-bit LSQ (first layer 8-bit), Adam. Mutual: one PQK "
        "Phase-2 step (student and SelfTeacher forward/backward, summed CE + Hinton KD losses, one optimizer step) "
        "against two plain FP32 steps.",
        "",
        f"| model | batch | plain step (ms) | masked + LSQ (ms) | ratio (goal ≤ {LSQ_GOAL}) | mutual step (ms) | "
        f"ratio to 2 plain (goal ≤ {MUTUAL_GOAL}) |",
        "|---|---|---|---|---|---|---|",
    ]
    missed = []
    for r in data["models"]:
        ok_l = r["ratio_lsq"] <= LSQ_GOAL
        ok_m = r["ratio_mutual"] <= MUTUAL_GOAL
        lines.append(f"| {r['name']} | {r['batch']} | {r['plain_ms']:.2f} | {r['lsq_ms']:.2f} | "
                     f"{r['ratio_lsq']:.2f}x {'✓' if ok_l else '✗'} | {r['mutual_ms']:.2f} | "
                     f"{r['ratio_mutual']:.2f}x {'✓' if ok_m else '✗'} |")
        if not ok_l:
            missed.append((r, "lsq"))
        if not ok_m:
            missed.append((r, "mutual"))
    lines.append("")
    if not missed:
        lines.append("Both goals met on every model measured.")
    else:
        names = ", ".join(f"{r['name']} ({'masked + LSQ' if v == 'lsq' else 'mutual'})" for r, v in missed)
        lines += [f"Goals missed: {names}.", ""]
        for r, v in missed:
            prof = r.get("profile", {})
            if v not in prof:
                continue
            ref = "plain2" if v == "mutual" else "plain"
            what = "two plain steps" if v == "mutual" else "a plain step"
            lines += [f"Where the time goes — {r['name']}, {'masked + LSQ' if v == 'lsq' else 'mutual'} step vs "
                      f"{what} ({prof.get('steps', '?')} profiled steps each; self CPU time per step; the ops "
                      "with the largest excess first):", "",
                      "| op | this step (ms) | calls | reference (ms) | calls | excess (ms) |",
                      "|---|---|---|---|---|---|"]
            mine = {o["op"]: o for o in prof[v]}
            base_ops = {o["op"]: o for o in prof.get(ref, [])}
            none = {"self_ms": 0.0, "calls": 0}
            excess = sorted(set(mine) | set(base_ops), key=lambda op: mine.get(op, none)["self_ms"]
                            - base_ops.get(op, none)["self_ms"], reverse=True)
            for op in excess[:12]:
                a, c = mine.get(op, none), base_ops.get(op, none)
                lines.append(f"| `{op}` | {a['self_ms']:.3f} | {a['calls']:g} | {c['self_ms']:.3f} | {c['calls']:g} | "
                             f"{a['self_ms'] - c['self_ms']:+.3f} |")
            lines.append("")
            total, base = prof.get(f"{v}_total_ms"), prof.get("plain_total_ms")
            if total is not None and base is not None:
                base = 2 * base if v == "mutual" else base
                lines += [f"Total self CPU time per step under the profiler: {total:.2f} ms vs {base:.2f} ms.", ""]
    return lines


def write_all(results: Path = RESULTS) -> Path:
    """Regenerate ``RESULTS.md`` (and the plot) from whichever json files exist in ``results``."""
    results.mkdir(parents=True, exist_ok=True)
    acc, cost = _load(results / "accuracy.json"), _load(results / "cost.json")
    lines = ["# Benchmark results", "",
             "Generated by `benchmarks/report.py` from `accuracy.json` and `cost.json` "
             "(see `benchmarks/README.md` for how to rerun).", ""]
    if acc:
        lines += accuracy_section(acc)
        plot_accuracy(acc, results / "accuracy.png")
    else:
        lines += ["## Accuracy", "", "Not run yet: `python benchmarks/accuracy.py --seeds 5 --jobs 2`.", ""]
    if cost:
        lines += cost_section(cost)
    else:
        lines += ["## Cost", "", "Not run yet: `python benchmarks/cost.py`.", ""]
    out = results / "RESULTS.md"
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS)
