"""The language-model benchmark (issue 18): a small GPT-2 on generated arithmetic, compressed by the
bundled PQK recipe, scored by perplexity.

**Data.** Two-digit additions written as text, the sum reversed (so each digit depends on the ones
already written, as when adding by hand): ``;ab+cd=uts;`` for ``ab + cd = stu``, 11 tokens from a
vocabulary of 13 (digits, ``+``, ``=``, ``;``). The 10,000 operand pairs are split by a fixed
permutation into 6,000 training, 1,000 validation and 1,000 test pairs, so validation and test ask
for sums of pairs never seen in training. Every position after the first is scored (next-token
cross-entropy, as a language model is trained); the four operand digits are uniform, so the
perplexity floor of a model that adds perfectly is ``10 ** (4 / 10) = 2.51``. Next to perplexity
the benchmark reports *exact-match accuracy*: the share of prompts ``;ab+cd=`` whose greedy
continuation is the right sum (all three answer digits).

**Model.** Hugging Face ``GPT2LMHeadModel`` from a config (64 dimensions, 2 layers, 4 heads, random
initialization, ``lm_head`` tied to the token embedding): about 100k weights.

**Methods**, per (sparsity, bits) and seed, each run through ``squeezer.run`` in-process:

- ``pqk``: the bundled ``pqk.toml`` with only its model, data, task (``language_model``), targets
  (``Linear`` and ``Conv1D``) and its target (sparsity, bits) changed: dense 12 epochs, 5 pruning
  rounds x 4 epochs with LSQ, Phase 2 (2 warm-up + 10 mutual epochs);
- ``phase1_ft``: the same, with Phase 2 replaced by a ``train`` stage of the same 12 epochs and
  Phase 2's learning rate (the equal-budget ablation: what does Phase 2 add?);
- ``dense``: the recipe's own dense stage (12 epochs), read from the checkpoint the pipeline writes
  right after it (the model both methods start from), and ``dense_full``: FP32 trained for the
  whole 44-epoch budget as one ``train`` stage.

Recorded per run (``results/lm.json``): train / validation / test perplexity and exact-match
accuracy of every model, Phase 2's self-teacher perplexity, the artifact bytes, wall seconds.
``results/LM.md`` is generated from it (mean ± std over seeds; differences paired by seed). Runs
use one torch thread and run one at a time.

    python benchmarks/lm.py                                   # 2 configs x 3 seeds (about 40 min)
    python benchmarks/lm.py --seeds 1 --epochs-scale 0.05 --configs 0.5:4 --out /tmp/lm.json   # smoke
    python benchmarks/lm.py --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # ``benchmarks.lm`` is the recipes' factory module

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

# --------------------------------------------------------------------------------------------
# data and model
# --------------------------------------------------------------------------------------------
PLUS, EQUALS, SEP = 10, 11, 12
VOCAB = 13
LENGTH = 11
ANSWER = slice(7, 10)  # the three reversed sum digits
SPLITS = {"train": (0, 6000), "val": (6000, 7000), "test": (7000, 8000)}
SPLIT_SEED = 0x5A_D0
#: the perplexity of a model that adds perfectly: 4 uniform operand digits over 10 scored positions
FLOOR = 10 ** (4 / 10)


def encode(a: int, b: int) -> list[int]:
    """``;ab+cd=uts;`` as token ids: operands as two digits, the sum as three digits, reversed."""
    s = f"{a + b:03d}"[::-1]
    return [SEP, a // 10, a % 10, PLUS, b // 10, b % 10, EQUALS, *map(int, s), SEP]


def sequences(split: str) -> torch.Tensor:
    """``(n, 11)`` int64: the split's additions, from one fixed permutation of the 10,000 pairs."""
    order = torch.randperm(100 * 100, generator=torch.Generator().manual_seed(SPLIT_SEED))
    lo, hi = SPLITS[split]
    return torch.tensor([encode(int(p) // 100, int(p) % 100) for p in order[lo:hi]], dtype=torch.long)


class Additions(Dataset):
    """Hugging Face batches: ``input_ids``, ``attention_mask`` and ``labels`` (the model shifts them)."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def make_model() -> Any:
    """GPT-2 from a config: 64 dimensions, 2 layers, 4 heads, vocabulary 13, random weights."""
    import transformers

    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=SEP, eos_token_id=SEP)
    return transformers.GPT2LMHeadModel(config)


def make_loaders(batch_size: int = 64, subset: int | None = None) -> tuple[DataLoader, DataLoader]:
    """``(train, validation)``; the training loader shuffles from torch's global RNG, which the
    pipeline reseeds every epoch (so a resumed run is exact). ``subset``: the first ``subset`` of each."""
    train, val = sequences("train")[:subset], sequences("val")[:subset]
    return (DataLoader(Additions(train), batch_size=batch_size, shuffle=True),
            DataLoader(Additions(val), batch_size=256))


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def scores(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """Perplexity over every scored position and the exact-match accuracy (%) of the sum."""
    was = model.training
    model.eval()
    nll = tokens = exact = 0.0
    for chunk in ids.split(500):
        logits = model(input_ids=chunk).logits[:, :-1]
        target = chunk[:, 1:]
        nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1),
                                                       reduction="sum"))
        tokens += target.numel()
        # logits at position i predict token i + 1: the answer digits 7..9 come from positions 6..8
        predicted = logits[:, ANSWER.start - 1:ANSWER.stop - 1].argmax(-1)
        exact += float((predicted == chunk[:, ANSWER]).all(1).sum())
    model.train(was)
    return {"ppl": math.exp(nll / tokens), "exact": 100.0 * exact / len(ids)}


def split_scores(model: torch.nn.Module, subset: int | None) -> dict[str, dict[str, float]]:
    return {split: scores(model, sequences(split)[:subset]) for split in SPLITS}


# --------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------
def bundled_recipe() -> dict[str, Any]:
    from squeezer.pipeline.runner import DEFAULT_RECIPE

    return tomllib.loads(DEFAULT_RECIPE.read_text(encoding="utf-8"))


def recipe(method: str, sparsity: float, bits: int, out: str, scale: float = 1.0,
           subset: int | None = None) -> dict[str, Any]:
    """``pqk.toml`` on this model and data at (``sparsity``, ``bits``), as ``method`` runs it; every
    stage's epochs multiplied by ``scale`` (smoke runs)."""
    data = bundled_recipe()
    data["model"] = {"factory": "benchmarks.lm:make_model"}
    data["data"] = {"factory": "benchmarks.lm:make_loaders", "batch_size": data["data"].get("batch_size", 64)}
    if subset is not None:
        data["data"]["subset"] = subset
    data["task"] = "language_model"
    data["targets"] = {"types": ["Linear", "Conv1D"]}
    data["output_dir"], data["device"] = out, "cpu"
    dense, prune, mutual = data["stages"]
    prune["scheduler"] = {**prune["scheduler"], "target": sparsity}
    prune["quantizer"] = {**prune["quantizer"], "bits": bits}
    if method == "phase1_ft":
        mutual = {"type": "train", "name": "finetune", "lr": mutual["lr"],
                  "epochs": mutual["warmup_epochs"] + mutual["epochs"]}
    elif method == "dense_full":
        epochs = dense["epochs"] + prune["epochs_per_round"] * prune["scheduler"]["rounds"] \
            + mutual["warmup_epochs"] + mutual["epochs"]
        data["stages"] = [{**dense, "epochs": epochs}]
    if method != "dense_full":
        data["stages"] = [dense, prune, mutual]
    for stage in data["stages"]:
        for key in ("epochs", "epochs_per_round", "warmup_epochs"):
            if key in stage:
                stage[key] = max(1, round(stage[key] * scale))
    return data


def run(method: str, seed: int, sparsity: float, bits: int, scale: float, subset: int | None) -> dict[str, Any]:
    from benchmarks.suite_run import Recorder

    import squeezer
    from squeezer.recipe import recipe_from_dict

    start = time.perf_counter()
    rec = Recorder()
    with tempfile.TemporaryDirectory(prefix="squeezer-lm-") as tmp:
        data = recipe(method, sparsity, bits, tmp, scale, subset)
        result = squeezer.run(recipe_from_dict(data, source=f"pqk.toml on GPT-2 additions ({method})"),
                              out=tmp, overwrite=True, seed=seed, sink=rec, export=True)
    row: dict[str, Any] = {"method": method, "seed": seed, "sparsity_target": sparsity, "bits": bits,
                           "model": split_scores(result.model, subset), "sparsity": result.sparsity,
                           "pipeline_val_ppl": result.accuracy,
                           "artifact_bytes": int(result.report.file_bytes) if result.report is not None else None,
                           "epochs": sum(s.get("epochs", 0) + s.get("warmup_epochs", 0)
                                         + s.get("epochs_per_round", 0) * s.get("scheduler", {}).get("rounds", 0)
                                         for s in data["stages"]),
                           "notes": rec.notes}
    if rec.teacher:  # the teacher's metric per epoch, as the pipeline reports it (x100 by Recorder)
        row["teacher_val_ppl"] = rec.teacher[-1] / 100.0
    if rec.dense_state is not None and method != "dense_full":
        dense = make_model()
        dense.load_state_dict(rec.dense_state, strict=False)
        dense.tie_weights()
        row["dense"] = split_scores(dense, subset)
    row["seconds"] = time.perf_counter() - start
    return row


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _ms(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def report(data: dict[str, Any]) -> str:
    meta, runs = data["meta"], data["runs"]
    lines = ["# Language model: GPT-2 on generated additions (issue 18)", "",
             "Generated by `benchmarks/lm.py` from `lm.json`; the method is described in the script's docstring.",
             f"Seeds {meta['seeds']}, one torch thread, torch {meta['torch']}, commit `{meta['commit'][:10]}`, "
             f"{meta['seconds'] / 60:.0f} min. Perplexity floor (a model that adds perfectly): {FLOOR:.2f}; "
             "exact match: greedy continuation of `;ab+cd=` is the right sum, on pairs not seen in training.",
             ""]
    if meta.get("scale", 1.0) != 1.0:
        lines += [f"**SMOKE RUN** (epochs x {meta['scale']}): not a measurement.", ""]
    full = [r for r in runs if r["method"] == "dense_full"]
    configs = sorted({(r["sparsity_target"], r["bits"]) for r in runs if r["method"] != "dense_full"})
    lines += ["| model | sparsity | test ppl | test exact % | val ppl | val exact % | train ppl | train exact % "
              "| artifact B |", "|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, rows: list[dict[str, Any]], key: str = "model", sparsity: str = "0") -> None:
        def col(split: str, metric: str) -> str:
            return _ms([r[key][split][metric] for r in rows if key in r])

        size = _ms([float(r["artifact_bytes"]) for r in rows if r.get("artifact_bytes") and key == "model"], 0)
        lines.append(f"| {name} | {sparsity} | {col('test', 'ppl')} | {col('test', 'exact')} | {col('val', 'ppl')} "
                     f"| {col('val', 'exact')} | {col('train', 'ppl')} | {col('train', 'exact')} | {size} |")

    first = [r for r in runs if r["method"] == "pqk"]
    row("dense, 12 epochs (where PQK starts)", first, key="dense")
    row("dense, 44 epochs (equal budget)", full)
    for s, b in configs:
        for method, label in (("pqk", "PQK"), ("phase1_ft", "Phase 1 + fine-tuning")):
            rows = [r for r in runs if r["method"] == method and (r["sparsity_target"], r["bits"]) == (s, b)]
            if rows:
                row(f"{label}, {b}-bit", rows, sparsity=f"{s:.2f}")
    lines += ["", "Paired by seed (test split; perplexity: lower is better):", "",
              "| config | PQK − dense-44 ppl | PQK − Phase-1 ablation ppl | PQK − ablation exact % "
              "| PQK train ppl | teacher val ppl | PQK val ppl |", "|---|---|---|---|---|---|---|"]
    full_by_seed = {r["seed"]: r for r in full}
    for s, b in configs:
        pqk = {r["seed"]: r for r in runs if r["method"] == "pqk" and (r["sparsity_target"], r["bits"]) == (s, b)}
        ft = {r["seed"]: r for r in runs if r["method"] == "phase1_ft" and (r["sparsity_target"], r["bits"]) == (s, b)}

        def diff(other: dict[int, Any], metric: str, pqk: dict[int, Any] = pqk) -> str:
            return _ms([pqk[k]["model"]["test"][metric] - other[k]["model"]["test"][metric]
                        for k in sorted(pqk) if k in other])

        lines.append(f"| {s:.2f} / {b}-bit | {diff(full_by_seed, 'ppl')} | {diff(ft, 'ppl')} | {diff(ft, 'exact')} "
                     f"| {_ms([r['model']['train']['ppl'] for r in pqk.values()])} "
                     f"| {_ms([r['teacher_val_ppl'] for r in pqk.values() if 'teacher_val_ppl' in r])} "
                     f"| {_ms([r['model']['val']['ppl'] for r in pqk.values()])} |")
    return "\n".join(lines) + "\n"


def write(path: Path, data: dict[str, Any]) -> None:
    from squeezer import atomic

    atomic.write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--configs", default="0.5:4,0.8:4", help="sparsity:bits, comma separated")
    parser.add_argument("--methods", default="pqk,phase1_ft,dense_full")
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--subset", type=int, default=None, help="the first N sequences of each split (smoke)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "lm.json")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    report_path = args.out.with_name("LM.md") if args.out.name == "lm.json" else args.out.with_suffix(".md")
    if args.report_only:
        report_path.write_text(report(json.loads(args.out.read_text(encoding="utf-8"))), encoding="utf-8")
        return 0
    import subprocess

    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    configs = [(float(s), int(b)) for s, b in (c.split(":") for c in args.configs.split(","))]
    methods = args.methods.split(",")
    data: dict[str, Any] = {"meta": {"seeds": list(range(args.seeds)), "configs": configs, "scale": args.epochs_scale,
                                     "threads": args.threads, "torch": torch.__version__, "commit": commit,
                                     "python": platform.python_version(), "seconds": 0.0},
                            "runs": []}
    start = time.perf_counter()
    jobs = [("dense_full", seed, 0.0, 32) for seed in range(args.seeds) if "dense_full" in methods]
    jobs += [(m, seed, s, b) for s, b in configs for seed in range(args.seeds) for m in methods if m != "dense_full"]
    for method, seed, s, b in jobs:
        row = run(method, seed, s, b, args.epochs_scale, args.subset)
        data["runs"].append(row)
        data["meta"]["seconds"] = time.perf_counter() - start
        write(args.out, data)
        print(f"{method} seed {seed} ({s}, {b}): test ppl {row['model']['test']['ppl']:.3f} "
              f"exact {row['model']['test']['exact']:.1f}% ({row['seconds']:.0f} s)", flush=True)
    report_path.write_text(report(data), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
