"""The suite benchmark (issue 16): the bundled default PQK recipe on every suite member.

For each member of :mod:`benchmarks.suite` and each seed, ``sdk/squeezer/recipes/pqk.toml`` runs
with only its ``[model]`` and ``[data]`` tables replaced (the recipe's ``batch_size`` kept) and the
target set (default 0.90 sparsity, 4-bit; the ``@first`` 8-bit override stays). Recorded per run:

- **dense**: the recipe's own dense stage (12 epochs), captured from the pipeline's checkpoint
  after that stage: validation, test and training accuracy (the model PQK starts from);
- **dense_full** (method ``dense_full``): FP32 trained for the recipe's whole budget (dense + all
  pruning rounds + Phase 2 epochs, 44) as one ``train`` stage of the same recipe (Adam, the
  recipe's learning rate, one cosine schedule): the equal-budget reference;
- **pqk**: the final student's validation, test and training accuracy (training accuracy on the
  unaugmented training split, eval mode), the self-teacher's last validation accuracy, the accuracy
  after each stage, the compressed size (the exported artifact's bytes, and an accounted size:
  per compressed weight ``nnz * bits + numel * H(density)`` plus an fp32 scale per output channel,
  fp32 for everything else, as ``benchmarks/accuracy.py`` counts) and the *dead rows* per layer:
  output channels (conv), units (linear, RNN gate rows) or class rows (head) whose kept weights are
  all zero, by the mask alone and after quantization.

Every run uses one torch thread (``--threads``), one run at a time, in a temporary output
directory. ``results/suite.json`` is rewritten after every run; ``results/SUITE.md`` is generated
from it (mean ± std over seeds; differences paired by seed).

    python benchmarks/suite_run.py                                   # 6 members x 3 seeds
    python benchmarks/suite_run.py --seeds 1 --models digits_cnn --epochs-scale 0.1 --out /tmp/s.json  # smoke
    python benchmarks/suite_run.py --report-only                     # SUITE.md from suite.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import tomllib
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmarks.suite, also as the factories' import root

from benchmarks.report import keep_hand_written  # noqa: E402  (a rerun keeps SUITE.md's written sections)

METHODS = ("pqk", "dense_full", "pqk_l1", "phase1_ft", "torch_baseline")
DEFAULT_METHODS = ("pqk", "dense_full")


# --------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------
#: the recipe every method starts from (``--recipe``; default: the bundled ``pqk.toml``)
RECIPE: Path | None = None


@functools.cache
def _recipe_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def bundled_recipe() -> dict[str, Any]:
    """A fresh copy of the recipe, read once per process: editing the file while a benchmark runs
    (a candidate next to its baseline) does not change the runs still to come."""
    from squeezer.pipeline.runner import DEFAULT_RECIPE

    return tomllib.loads(_recipe_text(RECIPE or DEFAULT_RECIPE))


def _scaled(epochs: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(epochs * scale))


def pqk_recipe(member: Any, sparsity: float, bits: int, out: str, scale: float = 1.0,
               data_options: dict[str, Any] | None = None, l1: bool = False) -> dict[str, Any]:
    """``pqk.toml`` as a dict with ``member``'s model and data, the target, and (for smoke runs) every
    stage's epochs multiplied by ``scale`` and ``data_options`` added to ``[data]`` (tests: a subset).
    ``l1``: the recipe's ``importance`` (LAMP) replaced by global L1 magnitude, the prune stage's and
    ``Compression``'s default when issue 16 was filed: the diagnostic method ``pqk_l1``."""
    data = bundled_recipe()
    data.update(member.recipe_tables(batch_size=data["data"].get("batch_size")))
    data["data"].update(data_options or {})
    dense, prune, mutual = data["stages"]
    assert (dense["type"], prune["type"], mutual["type"]) == ("train", "prune", "mutual"), "unexpected pqk.toml"
    prune["scheduler"] = {**prune["scheduler"], "target": sparsity}
    prune["quantizer"] = {**prune["quantizer"], "bits": bits}
    if l1:
        prune["importance"] = "l1"
    if scale != 1.0:
        dense["epochs"] = _scaled(dense["epochs"], scale)
        prune["epochs_per_round"] = _scaled(prune["epochs_per_round"], scale)
        mutual["warmup_epochs"] = _scaled(mutual.get("warmup_epochs", 0), scale, 0)
        mutual["epochs"] = _scaled(mutual["epochs"], scale)
    data["output_dir"], data["device"] = out, "cpu"
    return data


def total_epochs(recipe: dict[str, Any]) -> int:
    dense, prune, last = recipe["stages"]
    return (dense["epochs"] + prune["scheduler"]["rounds"] * prune["epochs_per_round"]
            + last.get("warmup_epochs", 0) + last["epochs"])


def phase1_ft_recipe(member: Any, sparsity: float, bits: int, out: str, scale: float = 1.0,
                     data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The equal-budget ablation of Phase 2 (method ``phase1_ft``): :func:`pqk_recipe` with its
    ``mutual`` stage replaced by a ``train`` stage of the same epochs (``warmup_epochs + epochs``) and
    learning rate: plain cross-entropy fine-tuning of the pruned, quantized student. A ``train`` stage
    after the prune stage keeps the masks and LSQ quantizers applying (``stages/train.py``); no
    self-teacher, no distillation."""
    data = pqk_recipe(member, sparsity, bits, out, scale, data_options)
    mutual = data["stages"][2]
    ft = {"type": "train", "name": "phase1_ft", "epochs": mutual.get("warmup_epochs", 0) + mutual["epochs"]}
    ft.update({k: v for k, v in mutual.items() if k in ("lr", "optimizer", "weight_decay", "momentum",
                                                          "lr_schedule", "quantizer_lr_scale")})
    data["stages"][2] = ft
    return data


def dense_full_recipe(member: Any, out: str, scale: float = 1.0,
                      data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The same recipe's dense stage, run for the whole budget of :func:`pqk_recipe`."""
    data = pqk_recipe(member, 0.5, 4, out, scale, data_options)
    dense = dict(data["stages"][0], epochs=total_epochs(data), name="dense_full")
    data["stages"] = [dense]
    return data


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------
def accuracy(model: Any, dataset: Any) -> float:
    """Top-1 accuracy (%) of ``model`` (eval mode) on a tensor dataset."""
    import torch
    from benchmarks.suite.common import eval_loader

    was = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in eval_loader(dataset):
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    model.train(was)
    return 100.0 * correct / total


def eval_splits(member: Any, data_options: dict[str, Any] | None) -> Any:
    """The member's fixed splits; with a ``subset`` data option (tiny runs) the first ``subset`` of each."""
    from benchmarks.suite.common import Splits, head

    splits, n = member.make_splits(), (data_options or {}).get("subset")
    return splits if n is None else Splits(*(head(d, n) for d in splits))


def split_accuracies(model: Any, splits: Any) -> dict[str, float]:
    return {"train": accuracy(model, splits.train), "val": accuracy(model, splits.val),
            "test": accuracy(model, splits.test)}


def entropy_bits(n: int, nnz: int) -> float:
    if n == 0 or nnz in (0, n):
        return 0.0
    p = nnz / n
    return -n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))


def sizes(model: Any, layers: tuple[tuple[str, int, int, int], ...]) -> dict[str, float]:
    """Accounted bytes of the student and of the dense FP32 model (see the module docstring)."""
    import torch

    compressed = {path for path, *_ in layers}
    floats = 0
    dense_floats = 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if not torch.is_floating_point(t):
            continue
        clean = name.replace(".parametrizations.", ".").replace(".original", "")
        if ".mask" in name or "quantizer" in name:
            continue
        dense_floats += t.numel()
        if clean not in compressed:
            floats += t.numel()
    bits = 32.0 * floats
    for _path, numel, nnz, b in layers:
        shape = _weight(model, _path).shape
        bits += nnz * b + entropy_bits(numel, nnz) + (32 * shape[0] if b < 32 else 0)
    return {"accounted_bytes": bits / 8, "fp32_bytes": 4.0 * dense_floats}


def _weight(model: Any, path: str) -> Any:
    """The compressed weight at ``path``: its stored original under a parametrization, else the
    parameter itself (a plain model, as the torch baseline's)."""
    try:
        return model.get_parameter(path)
    except AttributeError:
        return model.get_parameter(_param_path(model, path))


def _param_path(model: Any, path: str) -> str:
    module, _, name = path.rpartition(".")
    return f"{module}.parametrizations.{name}.original" if module else f"parametrizations.{name}.original"


def dead_rows(model: Any) -> list[dict[str, Any]]:
    """Per compressed weight: rows (dim 0: output channels, units, gate rows, class rows) whose
    kept weights are all zero, by the mask and by the deployed (masked, quantized) weight."""
    import torch

    from squeezer import compress
    from squeezer.compress.overrides import is_depthwise

    out = []
    with torch.no_grad():
        for path, p in compress.compressed_weights(model):
            module_name, _, name = path.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            weight = getattr(module, name)  # the student view: Q(W * M)
            rows = weight.shape[0]
            by_mask = int((~p.mask.reshape(rows, -1).any(1)).sum())
            by_value = int((weight.reshape(rows, -1) == 0).all(1).sum())
            depthwise = is_depthwise(module)
            out.append({"layer": path, "type": type(module).__name__, "depthwise": depthwise, "rows": rows,
                        "density": float(p.mask.float().mean()), "dead_mask": by_mask, "dead_quantized": by_value})
    return out


class Recorder:
    """Sink: stage timing, the self-teacher's accuracy, warnings, and the dense model after stage 0
    (read from the checkpoint the pipeline writes right after that stage ends)."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.stage_seconds: dict[str, float] = {}
        self.teacher: list[float] = []
        self.notes: list[str] = []
        self.dense_state: dict[str, Any] | None = None
        self._want_dense = False

    def __call__(self, event: Any) -> None:
        from squeezer.pipeline import checkpoint
        from squeezer.pipeline.events import Checkpointed, EpochEnded, Note, StageEnded, StageStarted

        if isinstance(event, StageStarted):
            self.started[event.index] = time.perf_counter()
        elif isinstance(event, StageEnded):
            self.stage_seconds[event.name] = time.perf_counter() - self.started.get(event.index, time.perf_counter())
            self._want_dense = event.index == 0
        elif isinstance(event, Checkpointed) and self._want_dense:
            self._want_dense = False
            tensors, meta = checkpoint.load(Path(event.path))
            assert meta["stage"] == 1 and meta["epoch"] == 0, meta
            self.dense_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        elif isinstance(event, EpochEnded) and "teacher_accuracy" in event.extra:
            self.teacher.append(100.0 * event.extra["teacher_accuracy"])
        elif isinstance(event, Note) and event.level != "info":
            self.notes.append(f"{event.level}: {event.text}")


def run_recipe(data: dict[str, Any], seed: int, name: str) -> tuple[Any, Recorder]:
    import squeezer
    from squeezer.recipe import recipe_from_dict

    rec = Recorder()
    recipe = recipe_from_dict(data, source=name)
    result = squeezer.run(recipe, out=data["output_dir"], overwrite=True, seed=seed, sink=rec, export=True)
    return result, rec


def _stage_accuracy(result: Any) -> dict[str, float]:
    """Validation accuracy after each stage, by stage index (``RunResult.record`` or, before the run
    record existed, ``RunResult.records``)."""
    record = getattr(result, "record", None)
    if record is not None:
        return dict(record.stage_accuracy)
    return dict(getattr(result, "records", {}).get("stage_accuracy", {}))


def source_state() -> dict[str, Any]:
    """The commit and the files under sdk/ that differ from it (others may be editing the tree)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "sdk_modified": git("status", "--porcelain", "sdk").splitlines()}


def run_pqk(member: Any, seed: int, sparsity: float, bits: int, scale: float,
            data_options: dict[str, Any] | None = None, l1: bool = False, ft: bool = False) -> dict[str, Any]:
    splits = eval_splits(member, data_options)
    with tempfile.TemporaryDirectory(prefix="squeezer-suite-") as tmp:
        if ft:
            data = phase1_ft_recipe(member, sparsity, bits, tmp, scale, data_options)
        else:
            data = pqk_recipe(member, sparsity, bits, tmp, scale, data_options, l1)
        what = "pqk.toml, Phase 2 replaced by fine-tuning," if ft else "pqk.toml"
        result, rec = run_recipe(data, seed, f"{what} on {member.name} (s={sparsity}, b={bits})")
    student = result.model
    row: dict[str, Any] = {
        "student": split_accuracies(student, splits),
        "pipeline_val": 100.0 * result.accuracy,
        "sparsity": result.sparsity,
        "stage_accuracy": {k: 100.0 * v for k, v in _stage_accuracy(result).items()},
        "stage_seconds": rec.stage_seconds,
        "teacher_val": rec.teacher[-1] if rec.teacher else None,
        "artifact_bytes": int(result.report.file_bytes) if result.report is not None else None,
        **sizes(student, result.layers),
        "layers": [{"layer": p, "numel": n, "nnz": z, "bits": b} for p, n, z, b in result.layers],
        "dead_rows": dead_rows(student),
        "notes": rec.notes,
        "epochs": total_epochs(data),
    }
    if rec.dense_state is not None:
        dense = member.build_model()
        dense.load_state_dict(rec.dense_state)
        row["dense"] = split_accuracies(dense, splits)
        row["dense"]["epochs"] = data["stages"][0]["epochs"]
    return row


def run_dense_full(member: Any, seed: int, scale: float, data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    splits = eval_splits(member, data_options)
    with tempfile.TemporaryDirectory(prefix="squeezer-suite-") as tmp:
        data = dense_full_recipe(member, tmp, scale, data_options)
        result, rec = run_recipe(data, seed, f"pqk.toml dense stage for the whole budget on {member.name}")
    return {"dense_full": split_accuracies(result.model, splits), "epochs": data["stages"][0]["epochs"],
            "stage_seconds": rec.stage_seconds}


def run_one(member: Any, method: str, seed: int, sparsity: float, bits: int, scale: float,
            data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    start = time.perf_counter()
    row: dict[str, Any] = {"model": member.name, "method": method, "seed": seed, "sparsity_target": sparsity,
                           "bits": bits}
    try:
        if method == "dense_full":
            row.update(run_dense_full(member, seed, scale, data_options))
        elif method == "torch_baseline":
            from benchmarks.suite_torch import run_torch_baseline

            row.update(run_torch_baseline(member, seed, sparsity, bits, scale, data_options))
        else:
            row.update(run_pqk(member, seed, sparsity, bits, scale, data_options, method == "pqk_l1",
                               method == "phase1_ft"))
    except Exception as exc:  # one failed run must not lose the others
        row.update({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)})
    row["seconds"] = time.perf_counter() - start
    return row


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _ms(values: list[float], digits: int = 2) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def merged(base: dict[str, Any], parts: list[dict[str, Any]], why: str = "") -> dict[str, Any]:
    """``base`` with the runs of ``parts`` added, each replacing a run of the same model, method and
    seed; every part is listed in ``meta.appended`` (its models, methods, seeds, recipe and source)."""
    runs = {(r["model"], r["method"], r["seed"]): r for r in base["runs"]}
    meta = dict(base["meta"])
    appended = list(meta.get("appended", []))
    for part in parts:
        pm = part["meta"]
        runs.update({(r["model"], r["method"], r["seed"]): r for r in part["runs"]})
        meta["methods"] = sorted({*meta["methods"], *pm["methods"]}, key=METHODS.index)
        meta["wall_seconds"] = meta.get("wall_seconds", 0.0) + pm.get("wall_seconds", 0.0)
        appended.append({"models": pm["models"], "methods": pm["methods"], "seeds": pm["seeds"], "why": why,
                         "recipe": pm.get("recipe", "pqk.toml"), "source": pm.get("source", {})})
    meta["appended"] = appended
    return {"meta": meta, "runs": list(runs.values())}


def _seed_range(seeds: int | list[int]) -> str:
    """``0..N-1`` for an old record's count, or the listed seeds (``--first-seed``)."""
    if isinstance(seeds, int):
        return f"0..{seeds - 1}"
    return f"{seeds[0]}..{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else str(seeds)


def report(data: dict[str, Any]) -> str:
    from benchmarks.suite import REGISTRY

    meta, runs = data["meta"], [r for r in data["runs"] if "error" not in r]
    failed = [r for r in data["runs"] if "error" in r]
    s, b = meta["sparsity"], meta["bits"]
    lines = ["# Model suite: the default PQK recipe on models it was not tuned on", "",
             "Generated by `benchmarks/suite_run.py` from `suite.json` (members: `benchmarks/suite/`).", ""]
    if meta.get("epochs_scale", 1.0) != 1.0:
        lines += [f"> **SMOKE RUN** (epochs scale {meta['epochs_scale']}): the figures only show that it runs.", ""]
    if not meta.get("complete", True):
        lines += ["> **Incomplete**: interrupted or still running; only finished runs are shown.", ""]
    for extra in meta.get("appended", []):
        lines += ["> Runs added or replaced by a later `--append` or `--merge` invocation: "
                  f"models {', '.join(extra['models'])}, "
                  f"methods {', '.join(extra['methods'])}, seeds {_seed_range(extra['seeds'])}"
                  + (f" ({extra['why']})" if extra.get("why") else "") + ".", ""]
    lines += [
        f"The bundled `pqk.toml`, unchanged except `[model]`, `[data]` (its `batch_size` kept), the target "
        f"sparsity {s} and {b}-bit weights (`@first` stays 8-bit): dense 12 epochs, 5 pruning rounds x 4 "
        f"epochs, Phase 2 2 + 10 epochs ({meta.get('epochs', 44)} in all). Seeds {meta['seeds']} (the run's "
        "seed; the data and splits are fixed). Accuracy in %: *val* is the validation split the pipeline "
        "reports, *test* a held-out split nothing was tuned on, *train* the unaugmented training split in "
        "eval mode. Differences are paired by seed.",
        "",
        f"torch {meta.get('torch')}, {meta.get('threads')} thread(s), one run at a time, "
        f"{meta.get('cpus')} CPU(s) shared with other work; wall time {meta.get('wall_seconds', 0) / 60:.1f} min "
        "(all invocations).",
        "",
        "- **dense@12**: the recipe's own dense stage (the model PQK starts from), from the same run.",
        "- **dense@44**: the recipe's dense stage run for the whole budget (equal-budget FP32 reference).",
        "- **PQK**: the final 4-bit student; *teacher* is the self-teacher's last validation accuracy.",
        "",
    ]
    header = ("| model | domain | dense@12 val | dense@12 test | dense@44 val | dense@44 test | PQK val | PQK test "
              "| PQK − dense@44 (test) | PQK − dense@12 (test) | PQK train | dense@12 train | teacher val "
              "| artifact (B) | accounted (B) | FP32 (B) |")
    lines += ["## Accuracy and size", "", header, "|" + "---|" * (header.count("|") - 1)]
    gaps: dict[str, list[float]] = {}
    for name in meta["models"]:
        mem = REGISTRY[name]
        pqk = {r["seed"]: r for r in runs if r["model"] == name and r["method"] == "pqk"}
        full = {r["seed"]: r for r in runs if r["model"] == name and r["method"] == "dense_full"}
        if not pqk and not full:
            continue

        def col(rows: dict[int, Any], key: str, split: str) -> dict[int, float]:
            return {sd: r[key][split] for sd, r in rows.items() if key in r}

        p_test, p_val, p_train = col(pqk, "student", "test"), col(pqk, "student", "val"), col(pqk, "student", "train")
        d_test, d_val, d_train = col(pqk, "dense", "test"), col(pqk, "dense", "val"), col(pqk, "dense", "train")
        f_test, f_val = col(full, "dense_full", "test"), col(full, "dense_full", "val")
        gaps[name] = _paired(p_test, f_test) if f_test else _paired(p_test, d_test)
        teacher = [r["teacher_val"] for r in pqk.values() if r.get("teacher_val") is not None]
        art = [r["artifact_bytes"] for r in pqk.values() if r.get("artifact_bytes")]
        acc = [r["accounted_bytes"] for r in pqk.values()]
        fp32 = [r["fp32_bytes"] for r in pqk.values()]
        lines.append(
            f"| {name} | {mem.domain} | {_ms(list(d_val.values()))} | {_ms(list(d_test.values()))} "
            f"| {_ms(list(f_val.values()))} | {_ms(list(f_test.values()))} | {_ms(list(p_val.values()))} "
            f"| {_ms(list(p_test.values()))} | {_ms(_paired(p_test, f_test))} | {_ms(_paired(p_test, d_test))} "
            f"| {_ms(list(p_train.values()))} | {_ms(list(d_train.values()))} | {_ms(teacher)} "
            f"| {_ms(art, 0)} | {_ms(acc, 0)} | {_ms(fp32, 0)} |")
    lines += ["", "## Where the accuracy goes", "",
              "Per stage (validation, %): after the dense stage, after Phase 1 (pruning + LSQ), after Phase 2. "
              "*Dead rows*: output channels / units / class rows of compressed layers whose deployed weights are all "
              "zero (mean over seeds; in brackets those emptied by the mask alone); *depthwise*: the same for "
              "depthwise convolutions only.", "",
              "| model | dense stage | Phase 1 | Phase 2 | dead rows / rows | depthwise dead / rows | layers with dead "
              "rows (max over seeds) | seconds/run |",
              "|---|---|---|---|---|---|---|---|"]
    for name in meta["models"]:
        pqk = [r for r in runs if r["model"] == name and r["method"] == "pqk"]
        if not pqk:
            continue
        st = [[r["stage_accuracy"].get(str(i)) for r in pqk] for i in range(3)]
        rows = pqk[0]["dead_rows"]
        total = sum(d["rows"] for d in rows)
        dw_total = sum(d["rows"] for d in rows if d["depthwise"])
        dead = [sum(d["dead_quantized"] for d in r["dead_rows"]) for r in pqk]
        dead_m = [sum(d["dead_mask"] for d in r["dead_rows"]) for r in pqk]
        dw = [sum(d["dead_quantized"] for d in r["dead_rows"] if d["depthwise"]) for r in pqk]
        dw_m = [sum(d["dead_mask"] for d in r["dead_rows"] if d["depthwise"]) for r in pqk]
        worst: dict[str, int] = {}
        for r in pqk:
            for d in r["dead_rows"]:
                if d["dead_quantized"]:
                    worst[d["layer"]] = max(worst.get(d["layer"], 0), d["dead_quantized"])
        shown = ", ".join(f"`{k}` {v}/{next(d['rows'] for d in rows if d['layer'] == k)}"
                          for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:4]) or "none"
        dw_text = f"{statistics.mean(dw):.1f} ({statistics.mean(dw_m):.1f}) / {dw_total}" if dw_total else "—"
        lines.append(
            f"| {name} | {_ms([v for v in st[0] if v is not None])} | {_ms([v for v in st[1] if v is not None])} "
            f"| {_ms([v for v in st[2] if v is not None])} "
            f"| {statistics.mean(dead):.1f} ({statistics.mean(dead_m):.1f}) / {total} | {dw_text} | {shown} "
            f"| {statistics.mean(r['seconds'] for r in pqk):.0f} |")
    allgaps = [g for v in gaps.values() for g in v]
    if allgaps:  # none until a member has a PQK run (a run of dense_full alone)
        within = [n for n, v in gaps.items() if v and statistics.mean(v) >= -1.0]
        lines += ["", "## Goal (issue 16): PQK within 1.0 point of dense on every member", "",
                  f"Mean paired test gap over all members and seeds: {statistics.mean(allgaps):+.2f} points "
                  "(PQK − dense@44, or − dense@12 where no dense@44 ran). Within 1.0 point: "
                  f"{len(within)} of {len(gaps)} ({', '.join(within) or 'none'})."]
    l1 = [r for r in runs if r["method"] == "pqk_l1"]
    if l1:
        lines += ["", "## Diagnostic: global L1 importance instead of the recipe's LAMP", "",
                  "The same recipe with `importance = \"l1\"` in the prune stage (the prune stage's and "
                  "`Compression`'s default when issue 16 was filed). Same seeds as the LAMP runs shown next to it. "
                  "Dead rows: deployed weights all zero (mask alone in brackets).", "",
                  "| model | seeds | L1 val | L1 test | LAMP test (same seeds) | L1 dead rows / rows "
                  "| L1 depthwise dead / rows | LAMP dead rows | L1 layers with dead rows (max over seeds) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in meta["models"]:
            rows_l1 = {r["seed"]: r for r in l1 if r["model"] == name}
            if not rows_l1:
                continue
            lamp = {r["seed"]: r for r in runs if r["model"] == name and r["method"] == "pqk" and r["seed"] in rows_l1}
            first = next(iter(rows_l1.values()))["dead_rows"]
            total = sum(d["rows"] for d in first)
            dw_total = sum(d["rows"] for d in first if d["depthwise"])

            def dead_of(r: dict[str, Any], depthwise: bool = False, key: str = "dead_quantized") -> int:
                return sum(d[key] for d in r["dead_rows"] if d["depthwise"] or not depthwise)

            worst: dict[str, int] = {}
            for r in rows_l1.values():
                for d in r["dead_rows"]:
                    if d["dead_quantized"]:
                        worst[d["layer"]] = max(worst.get(d["layer"], 0), d["dead_quantized"])
            shown = ", ".join(f"`{k}` {v}/{next(d['rows'] for d in first if d['layer'] == k)}"
                              for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:4]) or "none"
            dead = [dead_of(r) for r in rows_l1.values()]
            dead_m = [dead_of(r, key="dead_mask") for r in rows_l1.values()]
            dw = [dead_of(r, True) for r in rows_l1.values()]
            dw_m = [dead_of(r, True, "dead_mask") for r in rows_l1.values()]
            dw_text = f"{statistics.mean(dw):.1f} ({statistics.mean(dw_m):.1f}) / {dw_total}" if dw_total else "—"
            lines.append(
                f"| {name} | {sorted(rows_l1)} | {_ms([r['student']['val'] for r in rows_l1.values()])} "
                f"| {_ms([r['student']['test'] for r in rows_l1.values()])} "
                f"| {_ms([r['student']['test'] for r in lamp.values()])} "
                f"| {statistics.mean(dead):.1f} ({statistics.mean(dead_m):.1f}) / {total} | {dw_text} "
                f"| {_ms([float(dead_of(r)) for r in lamp.values()], 1)} | {shown} |")
    lines += _ablation_section(meta, runs)
    from benchmarks.suite_torch import torch_section

    lines += torch_section(meta, runs)
    if meta.get("observations"):
        lines += ["", "## Observations (written from this run's numbers, not generated)", "",
                  meta["observations"].strip()]
    notes = sorted({n for r in runs for n in r.get("notes", [])})
    if notes:
        lines += ["", "## Warnings the pipeline emitted", "", *[f"- {n}" for n in notes[:20]]]
    if failed:
        lines += ["", "## Failed runs", "", *[f"- {r['model']} {r['method']} seed {r['seed']}: {r['error']}"
                                                for r in failed]]
    return "\n".join(lines) + "\n"


def _ablation_section(meta: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """Phase 2 against ``phase1_ft`` (the same recipe, Phase 2 replaced by equal-budget fine-tuning),
    paired by seed: only seeds with both runs enter."""
    ft_runs = [r for r in runs if r["method"] == "phase1_ft"]
    if not ft_runs:
        return []
    lines = ["", "## Phase 2 vs the equal-budget Phase-1 ablation (issue 16, item 4)", "",
             "*FT*: the same recipe with the `mutual` stage replaced by a `train` stage of the same epochs "
             "(2 + 10 = 12) and learning rate (the `mutual` stage's, one cosine schedule): plain cross-entropy "
             "fine-tuning of "
             "the pruned 4-bit student, masks and LSQ quantizers kept, no self-teacher. Paired by seed (only "
             "seeds with both runs). *Teacher − student*: PQK's self-teacher minus its student, validation.", "",
             "| model | seeds | PQK test | FT test | PQK − FT (test) | PQK val | FT val | PQK − FT (val) "
             "| PQK train | FT train | teacher − student (val) | Phase 1 val (PQK / FT runs) | s/run (PQK / FT) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in meta["models"]:
        ft = {r["seed"]: r for r in ft_runs if r["model"] == name}
        pqk = {r["seed"]: r for r in runs if r["model"] == name and r["method"] == "pqk" and r["seed"] in ft}
        seeds = sorted(set(ft) & set(pqk))
        if not seeds:
            continue

        def split(rows: dict[int, Any], key: str, seeds: list[int] = seeds) -> dict[int, float]:
            return {sd: rows[sd]["student"][key] for sd in seeds}

        def vals(d: dict[int, float], seeds: list[int] = seeds) -> list[float]:
            return [d[sd] for sd in seeds]

        gap = [pqk[sd]["teacher_val"] - pqk[sd]["student"]["val"] for sd in seeds
               if pqk[sd].get("teacher_val") is not None]
        ph1 = [[rows[sd]["stage_accuracy"].get("1") for sd in seeds] for rows in (pqk, ft)]
        lines.append(
            f"| {name} | {seeds} | {_ms(vals(split(pqk, 'test')))} | {_ms(vals(split(ft, 'test')))} "
            f"| {_ms(_paired(split(pqk, 'test'), split(ft, 'test')))} | {_ms(vals(split(pqk, 'val')))} "
            f"| {_ms(vals(split(ft, 'val')))} | {_ms(_paired(split(pqk, 'val'), split(ft, 'val')))} "
            f"| {_ms(vals(split(pqk, 'train')))} | {_ms(vals(split(ft, 'train')))} | {_ms(gap)} "
            f"| {_ms([v for v in ph1[0] if v is not None])} / {_ms([v for v in ph1[1] if v is not None])} "
            f"| {statistics.mean(pqk[sd]['seconds'] for sd in seeds):.0f} / "
            f"{statistics.mean(ft[sd]['seconds'] for sd in seeds):.0f} |")
    if meta.get("ablation_notes"):
        lines += ["", meta["ablation_notes"].strip()]
    return lines


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def markdown(md: Path, data: dict[str, Any]) -> str:
    """The report for ``data``; the hand-written sections of the file at ``md`` are kept unless the
    run stores its own observations (``--observations``), which replace them."""
    generated = report(data)
    return generated if data["meta"].get("observations") else keep_hand_written(md, generated)


def write_report(md: Path, data: dict[str, Any]) -> None:
    """The Markdown report (keeping its hand-written sections) and, beside it, the accuracy-vs-size
    plot (``SUITE.md`` -> ``suite.png``, ``X.md`` -> ``X.png``)."""
    from benchmarks.suite_plot import plot

    md.write_text(markdown(md, data), encoding="utf-8")
    png = md.with_name("suite.png") if md.name == "SUITE.md" else md.with_suffix(".png")
    print(md, png if plot(data, png) else "(no plot: matplotlib is not installed)")


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suite import REGISTRY

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="first seed: --first-seed 1 --seeds 2 runs seeds 1 and 2 (a run split over processes)")
    ap.add_argument("--models", default=",".join(REGISTRY), help="comma-separated suite members")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"comma-separated, of {', '.join(METHODS)} (default: {', '.join(DEFAULT_METHODS)})")
    ap.add_argument("--append", action="store_true",
                    help="add the runs to those already in --out (replacing runs of the same model, method and seed)")
    ap.add_argument("--sparsity", type=float, default=0.90)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every stage's epochs (smoke runs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "suite.json")
    ap.add_argument("--why", default="", help="with --append: the reason, shown in the report")
    ap.add_argument("--observations", type=Path, help="with --report-only: a Markdown file of observations to keep")
    ap.add_argument("--report-only", action="store_true", help="regenerate the Markdown from --out")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="put the runs of these --out files (e.g. one per process) into --out, replacing runs of "
                         "the same model, method and seed, then regenerate the Markdown")
    ap.add_argument("--recipe", type=Path, help="a PQK recipe of the same three stages instead of the bundled "
                                                "pqk.toml (to compare a candidate default)")
    args = ap.parse_args(argv)
    md = args.out.with_name("SUITE.md") if args.out.name == "suite.json" else args.out.with_suffix(".md")
    global RECIPE
    RECIPE = args.recipe
    if args.merge:
        write_json(args.out, merged(json.loads(args.out.read_text(encoding="utf-8")),
                                    [json.loads(p.read_text(encoding="utf-8")) for p in args.merge], args.why))
        write_report(md, json.loads(args.out.read_text(encoding="utf-8")))
        return 0
    if args.report_only:
        stored = json.loads(args.out.read_text(encoding="utf-8"))
        if args.observations is not None:  # kept in the JSON, so a regenerated report keeps them
            stored["meta"]["observations"] = args.observations.read_text(encoding="utf-8")
            write_json(args.out, stored)
        write_report(md, stored)
        return 0
    os.environ.setdefault("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in models if m not in REGISTRY] + [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown model or method: {', '.join(unknown)}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    meta = {"models": models, "methods": methods, "seeds": seeds, "sparsity": args.sparsity,
            "bits": args.bits, "epochs_scale": args.epochs_scale, "threads": args.threads,
            "recipe": str(args.recipe) if args.recipe else "pqk.toml",
            "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "epochs": total_epochs(pqk_recipe(REGISTRY[models[0]], args.sparsity, args.bits, "", args.epochs_scale)),
            "complete": False, "source": source_state()}
    data: dict[str, Any] = {"meta": meta, "runs": []}
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text(encoding="utf-8"))
        redo = {(m, k, sd) for m in models for k in methods for sd in seeds}
        data["runs"] = [r for r in old["runs"] if (r["model"], r["method"], r["seed"]) not in redo]  # replaced
        meta.update({k: v for k, v in old["meta"].items() if k not in ("methods", "complete", "source")})
        meta["source"] = old["meta"].get("source", {})
        meta["methods"] = sorted({*old["meta"]["methods"], *methods}, key=METHODS.index)
        meta["appended"] = [*old["meta"].get("appended", []), {"models": models, "methods": methods,
                                                               "seeds": seeds, "why": args.why,
                                                               "source": source_state()}]
    start = time.perf_counter() - meta.get("wall_seconds", 0.0)
    for seed in seeds:
        for name in models:
            for method in methods:
                row = run_one(REGISTRY[name], method, seed, args.sparsity, args.bits, args.epochs_scale)
                data["runs"].append(row)
                meta["wall_seconds"] = time.perf_counter() - start
                write_json(args.out, data)
                md.write_text(markdown(md, data), encoding="utf-8")  # the plot at the end
                acc = row.get("student", row.get("dense_full", {}))
                print(f"[{meta['wall_seconds'] / 60:5.1f} min] {name} {method} seed {seed}: "
                      f"{row.get('error') or acc} ({row['seconds']:.0f} s)", flush=True)
    meta["complete"] = True
    write_json(args.out, data)
    write_report(md, data)
    return 0 if all("error" not in r for r in data["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
