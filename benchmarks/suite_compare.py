"""Paired comparison of two suite runs (``suite_run.py`` json files): a candidate recipe vs a baseline.

    python benchmarks/suite_compare.py --base base.json --cand cand.json --title "..." --out results/X.md

Runs are paired by (model, seed); only pairs that agree up to the change are compared: the same
validation accuracy after the dense stage (``--same-through dense``, for a change to Phase 1 or
later) or after Phase 1 too (``phase1``, for a change to Phase 2). Floating-point results differ
between machines (CPU kernels), so a baseline from another machine is listed as not comparable
rather than mixed into the difference. For each member: the candidate's and the
baseline's test / validation accuracy, the paired difference (mean ± std and per seed), the
candidate student's training accuracy and its self-teacher's validation accuracy (the regime).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def _rows(path: Path, method: str) -> dict[tuple[str, int], dict[str, Any]]:
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    return {(r["model"], r["seed"]): r for r in runs if r["method"] == method and "student" in r}


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} ± {sd:.2f}"


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}"


def _start(row: dict[str, Any], through: str) -> tuple[float, ...]:
    """What a pair must share: the dense stage's validation accuracy (and Phase 1's)."""
    dense = (row["dense"]["val"],)
    return dense + ((row["stage_accuracy"]["1"],) if through == "phase1" else ())


def compare(base: dict[tuple[str, int], dict[str, Any]], cand: dict[tuple[str, int], dict[str, Any]],
            through: str = "dense") -> str:
    """The Markdown table of paired differences, then the overall mean and the pairs left out."""
    lines = ["| model | seeds | cand test | base test | cand − base (test) | per seed (test) | cand val | base val "
             "| cand − base (val) | cand train | cand teacher val |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    all_test, all_val, skipped = [], [], []
    for model in sorted({m for m, _ in cand}):
        seeds = []
        for m, seed in sorted(cand):
            if m != model or (m, seed) not in base:
                continue
            if _start(cand[m, seed], through) != _start(base[m, seed], through):
                skipped.append(f"{m} seed {seed}")
                continue
            seeds.append(seed)
        if not seeds:
            continue
        c = [cand[model, s] for s in seeds]
        b = [base[model, s] for s in seeds]
        dt = [x["student"]["test"] - y["student"]["test"] for x, y in zip(c, b, strict=True)]
        dv = [x["student"]["val"] - y["student"]["val"] for x, y in zip(c, b, strict=True)]
        all_test += dt
        all_val += dv
        teacher = [x["teacher_val"] for x in c if x.get("teacher_val") is not None]
        lines.append(
            f"| {model} | {seeds} | {_mean([x['student']['test'] for x in c])} "
            f"| {_mean([y['student']['test'] for y in b])} "
            f"| {_ms(dt)} | {', '.join(f'{d:+.2f}' for d in dt)} | {_mean([x['student']['val'] for x in c])} "
            f"| {_mean([y['student']['val'] for y in b])} | {_ms(dv)} | {_mean([x['student']['train'] for x in c])} "
            f"| {_mean(teacher) if teacher else '—'} |")
    if all_test:
        lines += ["", f"Over all {len(all_test)} pairs: test {_ms(all_test)}, validation {_ms(all_val)} "
                      f"(candidate ahead on test in {sum(d > 0 for d in all_test)}, behind in "
                      f"{sum(d < 0 for d in all_test)})."]
    if skipped:
        lines += ["", f"Not comparable (they differ through {through}, so the runs did not share their start): "
                  + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, nargs="+", required=True, help="baseline suite json file(s)")
    ap.add_argument("--cand", type=Path, nargs="+", required=True, help="candidate suite json file(s)")
    ap.add_argument("--base-method", default="pqk")
    ap.add_argument("--cand-method", default="pqk")
    ap.add_argument("--same-through", choices=("dense", "phase1"), default="dense",
                    help="what a pair must share: the dense stage, or Phase 1 too (a change to Phase 2)")
    ap.add_argument("--title", default="Paired suite comparison")
    ap.add_argument("--intro", type=Path, help="a Markdown file written under the title (what was compared, why)")
    ap.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    args = ap.parse_args(argv)
    base: dict[tuple[str, int], dict[str, Any]] = {}
    cand: dict[tuple[str, int], dict[str, Any]] = {}
    for path in args.base:
        base.update(_rows(path, args.base_method))
    for path in args.cand:
        cand.update(_rows(path, args.cand_method))
    intro = args.intro.read_text(encoding="utf-8").strip() + "\n\n" if args.intro else ""
    sources = (f"Baseline: {', '.join(str(p) for p in args.base)} (method `{args.base_method}`); candidate: "
               f"{', '.join(str(p) for p in args.cand)} (method `{args.cand_method}`). Written by "
               "`benchmarks/suite_compare.py`; accuracy in %, differences paired by seed.\n\n")
    text = f"# {args.title}\n\n{intro}{sources}{compare(base, cand, args.same_through)}"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
