"""The suite's accuracy-vs-size plot: one panel per member, test accuracy (mean ± std over seeds)
against the accounted model size, for every method a suite run holds (issue 16: "a per-model
accuracy-vs-size plot")."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

#: (label, marker) per row kind; dense rows are at the FP32 size
SERIES = {
    "dense@12": ("dense FP32, 12 epochs", "o"),
    "dense@44": ("dense FP32, 44 epochs", "s"),
    "pqk": ("squeezer PQK", "*"),
    "phase1_ft": ("squeezer Phase 1 + fine-tuning", "P"),
    "pqk_l1": ("squeezer PQK, L1 importance", "x"),
    "torch_baseline": ("plain PyTorch", "v"),
}


def points(data: dict[str, Any], member: str) -> dict[str, tuple[float, list[float]]]:
    """Per series: the mean accounted size in bytes and the test accuracies over seeds."""
    runs = [r for r in data["runs"] if r["model"] == member and "error" not in r]
    out: dict[str, tuple[float, list[float]]] = {}
    fp32 = next((r["fp32_bytes"] for r in runs if "fp32_bytes" in r), None)
    for method in ("pqk", "phase1_ft", "pqk_l1", "torch_baseline"):
        rows = [r for r in runs if r["method"] == method and "student" in r]
        if rows:
            out[method] = (statistics.mean(r["accounted_bytes"] for r in rows), [r["student"]["test"] for r in rows])
    if fp32 is not None:
        dense = [r["dense"]["test"] for r in runs if r["method"] == "pqk" and "dense" in r]
        full = [r["dense_full"]["test"] for r in runs if r["method"] == "dense_full"]
        for key, values in (("dense@12", dense), ("dense@44", full)):
            if values:
                out[key] = (fp32, values)
    return out


def plot(data: dict[str, Any], path: Path) -> bool:
    """Write the plot to ``path``; ``False`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return False
    members = [m for m in data["meta"]["models"] if points(data, m)]
    if not members:
        return False
    cols = min(3, len(members))
    rows = -(-len(members) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    for ax, member in zip(axes.flat, members, strict=False):
        for key, (size, values) in points(data, member).items():
            label, marker = SERIES[key]
            err = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.errorbar([size / 1000], [statistics.mean(values)], yerr=[err], marker=marker, capsize=3, label=label,
                        ms=10 if key == "pqk" else 6, linestyle="none")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(member, fontsize=10)
        ax.set_xlabel("accounted size (KB, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(members):]:
        ax.axis("off")
    legend: dict[str, Any] = {}  # every series once, from whichever panel has it
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels = list(legend)
    fig.legend(list(legend.values()), labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    meta = data["meta"]
    fig.suptitle(f"model suite at sparsity {meta['sparsity']}, {meta['bits']}-bit weights "
                 f"(mean ± std over seeds {meta['seeds']})", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
