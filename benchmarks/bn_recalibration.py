"""Does re-estimating BatchNorm statistics after Phase 1 help? (issue 16, item 3)

For each BatchNorm member of the model suite and each seed, the bundled ``pqk.toml`` runs through
Phase 1 only (the dense stage and the prune stage, as ``suite_run.py`` sets them up: 0.90 sparsity,
4-bit). The resulting student is measured, then its BatchNorm running statistics are reset and
re-estimated as a cumulative average over one pass of the unaugmented training split (every other
module in eval mode, so quantizers and dropout do not move), and measured again: the same weights,
before and after, paired exactly.

    python benchmarks/bn_recalibration.py --seeds 3 --out benchmarks/results/bn_recalibration.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from benchmarks import suite_run  # noqa: E402

BN_MEMBERS = ("mobilenet_digits", "resnet_shapes", "kws_dscnn")


def recalibrate(model: Any, dataset: Any) -> int:
    """Re-estimate every BatchNorm's running statistics over ``dataset``; returns how many."""
    import torch
    from benchmarks.suite.common import eval_loader
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was = model.training
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the whole pass
        m.train()
    with torch.no_grad():
        for x, _ in eval_loader(dataset):
            model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was)
    return len(norms)


def run(name: str, seed: int) -> dict[str, Any]:
    from benchmarks.suite import REGISTRY

    member = REGISTRY[name]
    splits = suite_run.eval_splits(member, None)
    with tempfile.TemporaryDirectory(prefix="squeezer-bn-") as tmp:
        data = suite_run.pqk_recipe(member, 0.9, 4, tmp)
        data["stages"] = data["stages"][:2]  # through Phase 1
        result, _ = suite_run.run_recipe(data, seed, f"pqk.toml through Phase 1 on {name}")
    student = result.model
    before = suite_run.split_accuracies(student, splits)
    norms = recalibrate(student, splits.train)
    return {"model": name, "seed": seed, "norms": norms, "before": before,
            "after": suite_run.split_accuracies(student, splits)}


def report(rows: list[dict[str, Any]]) -> str:
    lines = ["# BatchNorm re-estimation after Phase 1", "",
             "Written by `benchmarks/bn_recalibration.py` (its docstring has the method). Accuracy in %; "
             "after − before paired by seed (the same weights).", "",
             "| model | seeds | val before | val after | after − before (val) | test before | test after "
             "| after − before (test) | train after − before |", "|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]

        def col(when: str, split: str, mine: list[dict[str, Any]] = mine) -> list[float]:
            return [r[when][split] for r in mine]

        def diff(split: str, mine: list[dict[str, Any]] = mine) -> list[float]:
            return [r["after"][split] - r["before"][split] for r in mine]

        lines.append(f"| {name} | {[r['seed'] for r in mine]} | {suite_run._ms(col('before', 'val'))} "
                     f"| {suite_run._ms(col('after', 'val'))} | {suite_run._ms(diff('val'))} "
                     f"| {suite_run._ms(col('before', 'test'))} | {suite_run._ms(col('after', 'test'))} "
                     f"| {suite_run._ms(diff('test'))} | {suite_run._ms(diff('train'))} |")
    all_val = [r["after"]["val"] - r["before"]["val"] for r in rows]
    if len(all_val) > 1:
        lines += ["", f"Over all {len(all_val)} pairs: validation {statistics.mean(all_val):+.2f} ± "
                      f"{statistics.stdev(all_val):.2f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(BN_MEMBERS))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bn_recalibration.json")
    ap.add_argument("--merge", type=Path, nargs="+", help="add the rows of these files to --out, then report")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    if args.merge:
        rows = [r for p in [args.out, *args.merge] for r in json.loads(p.read_text(encoding="utf-8"))["rows"]]
    else:
        import torch

        torch.set_num_threads(1)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name in args.models.split(","):
                rows.append(run(name, seed))
                print(name, seed, rows[-1]["before"], rows[-1]["after"], flush=True)
    rows.sort(key=lambda r: (r["model"], r["seed"]))
    suite_run.write_json(args.out, {"source": suite_run.source_state(), "rows": rows})
    args.out.with_suffix(".md").write_text(report(rows), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
