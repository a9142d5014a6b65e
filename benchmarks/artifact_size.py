"""Artifact size against its information bound, and the cost of bit packing (issue 17, item 4).

For the bundled digits CNN (``recipes/pqk.toml``, the default of ``squeezer run``) and the KWS
DS-CNN (``recipes/kws_pqk.toml``): the whole file (header included) over the information bound
``sum(nnz * b + n * H(density)) / 8 + scales + the other state`` that ``squeezer inspect``
reports (goal <= 1.10), and what the same parts would take in the version-1 layout (one
safetensors tensor per part, the record as plain JSON metadata). Students are either

- ``train-free`` (the default): each model compressed as its recipe's prune stage prunes and
  quantizes it (all rounds at once, no training; batch-norm statistics from random inputs), or
- trained: the artifacts of finished runs, ``--artifact digits=RUN_DIR/model.safetensors``, or
  ``--train`` to run both bundled recipes first (digits ~25 s, KWS ~4 min on one core).

Packing: 4 M random 4-bit codes packed and unpacked by :mod:`squeezer.artifact.bitpack` and by the
version-1 packer (one byte per bit through ``np.packbits``, reproduced here), best of five runs,
peak memory by ``tracemalloc``. Writes ``results/artifact_size.json`` and ``results/ARTIFACT_SIZE.md``.

    python benchmarks/artifact_size.py
    python benchmarks/artifact_size.py --artifact digits=RUN/model.safetensors --artifact kws=KWS_RUN/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RECIPES = HERE.parent / "recipes"
GOAL = 1.10
MODELS = {
    "digits": ("pqk.toml", (1, 8, 8)),
    "kws": ("kws_pqk.toml", (1, 40, 32)),
}
N_CODES, CODE_BITS = 4_000_000, 4


# --- students ------------------------------------------------------------------------------------


def train_free(name: str, out: Path) -> Path:
    """The model of ``name``'s recipe compressed by its prune stage without training, exported."""
    from squeezer import load_registry
    from squeezer.artifact import export
    from squeezer.factories import build_module
    from squeezer.pipeline.rebuild import artifact_info, final_factory
    from squeezer.recipe import load_recipe
    from squeezer.recipe.configs import PruneStage
    from squeezer.session import Compression

    recipe_file, input_shape = MODELS[name]
    recipe = load_recipe(RECIPES / recipe_file)
    prune = next(stage for stage in recipe.stages if isinstance(stage, PruneStage))
    torch.manual_seed(0)
    model = build_module(final_factory(recipe)[0], "model")
    comp = Compression(model, importance=(prune.importance.name, dict(prune.importance.options)),
                       schedule=(prune.scheduler.name, dict(prune.scheduler.options)), quantizer=prune.quantizer,
                       min_density=prune.min_density, prune_every=0, registry=load_registry())
    while not comp.done:
        comp.prune_round()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, *input_shape))
    path = out / f"{name}.safetensors"
    export(model.eval(), path, info=artifact_info(recipe))
    return path


def trained(name: str, out: Path) -> Path:
    from squeezer.pipeline import run
    from squeezer.recipe import load_recipe

    result = run(load_recipe(RECIPES / MODELS[name][0]), out=out / name)
    assert result.artifact is not None
    return Path(result.artifact)


def v1_bytes(path: Path) -> int:
    """The size of the same parts and record in the version-1 layout: every part its own
    safetensors tensor (``layer/<path>/<part>``, ``state/<name>``), the record plain JSON."""
    from safetensors.torch import save

    from squeezer.artifact.reader import read

    art = read(path)
    v2_only = ("mask_bytes", "scale_shape", "scale_dtype")
    layers = [{k: v for k, v in layer.items() if k not in v2_only} for layer in art.meta["layers"]]
    meta = {"format": art.meta["format"], "version": 1, "info": art.meta["info"],
            "float_dtype": art.meta["float_dtype"], "layers": layers, "state": art.meta["state"],
            "checksum": {"algorithm": "sha256", "digest": "0" * 64}}
    tensors = {k: t.contiguous() for k, t in art.tensors.items()}
    return len(save(tensors, metadata={"squeezer": json.dumps(meta, sort_keys=True)}))


def measure(name: str, path: Path, kind: str) -> dict[str, Any]:
    from squeezer.artifact import format as fmt
    from squeezer.artifact import inspect
    from squeezer.artifact.reader import read

    report = inspect(path)
    art = read(path)
    record = {k: v for k, v in art.meta.items() if k not in ("format", "version")}
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    return {
        "model": name, "students": kind, "file_bytes": report.file_bytes, "bound_bytes": round(report.bound_bytes, 1),
        "file_ratio": round(report.file_ratio, 4), "payload_bytes": report.payload_bytes,
        "payload_ratio": round(report.ratio, 4), "header_bytes": report.header_bytes,
        "safetensors_header_bytes": 8 + header_length, "record_bytes": len(fmt.compress_record(record)),
        "record_json_bytes": len(fmt.canonical(record)), "state_bytes": report.state_bytes,
        "v1_file_bytes": v1_bytes(path), "layers": len(report.layers), "state_entries": len(art.meta["state"]),
        "sparsity": round(1 - report.nnz / sum(layer.numel for layer in report.layers), 4),
        "bits": [layer.bits for layer in report.layers], "goal_met": report.file_ratio <= GOAL,
    }


# --- packing -------------------------------------------------------------------------------------


def v1_pack(values: npt.NDArray[np.int64], bits: int) -> npt.NDArray[np.uint8]:
    """The version-1 packer: an (n, bits) matrix of single bits, then ``np.packbits``."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))


def v1_unpack(data: npt.NDArray[np.uint8], bits: int, count: int) -> npt.NDArray[np.int64]:
    weights = np.left_shift(np.int64(1), np.arange(bits - 1, -1, -1, dtype=np.int64))
    return np.unpackbits(data, count=count * bits).reshape(count, bits).astype(np.int64) @ weights


def cost(fn: Callable[[], object], repeats: int = 5) -> tuple[float, float, int]:
    """Wall time (s) of the first of ``repeats`` calls (fresh memory: what one export pays), the
    best of them, and the peak bytes allocated by one call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return times[0], min(times), peak


def packing() -> dict[str, Any]:
    from squeezer.artifact.bitpack import pack_bits, unpack_bits

    values = np.random.default_rng(0).integers(0, 1 << CODE_BITS, size=N_CODES)
    packed = pack_bits(values, CODE_BITS)
    assert np.array_equal(packed, v1_pack(values, CODE_BITS))
    assert np.array_equal(unpack_bits(packed, CODE_BITS, N_CODES), values)
    out: dict[str, Any] = {"codes": N_CODES, "bits": CODE_BITS, "packed_bytes": int(packed.size)}
    for label, pack, unpack in (("v1", v1_pack, v1_unpack), ("v2", pack_bits, unpack_bits)):
        first_pack, t_pack, m_pack = cost(lambda p=pack: p(values, CODE_BITS))  # type: ignore[misc]
        first_unpack, t_unpack, m_unpack = cost(lambda u=unpack: u(packed, CODE_BITS, N_CODES))  # type: ignore[misc]
        out[label] = {"pack_first_s": round(first_pack, 4), "pack_s": round(t_pack, 4), "pack_peak_bytes": m_pack,
                      "unpack_first_s": round(first_unpack, 4), "unpack_s": round(t_unpack, 4),
                      "unpack_peak_bytes": m_unpack}
    return out


# --- report --------------------------------------------------------------------------------------


def markdown(doc: dict[str, Any]) -> str:
    mib = 1 << 20
    lines = [
        "# Artifact size vs information bound (issue 17, item 4)",
        "",
        "Generated by `benchmarks/artifact_size.py` from `artifact_size.json`. Bound: "
        "`sum(nnz * b + n * H(density)) / 8` over the compressed layers, plus their scales and the other "
        f"state as stored (what `squeezer inspect` reports). Goal: the whole file <= {GOAL:.2f}x the bound. "
        "*v1 file*: the same parts and record in the version-1 layout (a safetensors tensor per part, "
        "the record as plain JSON metadata). *train-free*: each model compressed by its recipe's prune stage "
        "without training; *trained*: the artifacts of finished `squeezer run`s of `recipes/pqk.toml` and "
        "`recipes/kws_pqk.toml` (seed 0), passed with `--artifact`.",
        "",
        "| model | students | sparsity | file (B) | bound (B) | file / bound | payload / bound | header (B) "
        "| of which record (B) | v1 file (B) | v1 / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["artifacts"]:
        lines.append(
            f"| {r['model']} | {r['students']} | {r['sparsity']:.1%} | {r['file_bytes']:,} | {r['bound_bytes']:,.0f} "
            f"| **{r['file_ratio']:.3f}** | {r['payload_ratio']:.3f} | {r['header_bytes']:,} | {r['record_bytes']:,} "
            f"| {r['v1_file_bytes']:,} | {r['v1_file_bytes'] / r['bound_bytes']:.3f} |")
    p = doc["packing"]
    lines += [
        "",
        f"## Bit packing: {p['codes']:,} random {p['bits']}-bit codes ({p['packed_bytes']:,} bytes packed)",
        "",
        "Wall time of the first of five calls (fresh memory, as one export pays it) and the best of the five; "
        "peak memory allocated during one call (`tracemalloc`).",
        "",
        "| packer | pack, first / best (ms) | pack peak (MiB) | unpack, first / best (ms) | unpack peak (MiB) |",
        "|---|---|---|---|---|",
    ]
    for label, what in (("v1", "v1: one byte per bit, np.packbits"), ("v2", "v2: shift-or per residue class")):
        q = p[label]
        lines.append(f"| {what} | {1000 * q['pack_first_s']:.0f} / {1000 * q['pack_s']:.0f} "
                     f"| {q['pack_peak_bytes'] / mib:.1f} "
                     f"| {1000 * q['unpack_first_s']:.0f} / {1000 * q['unpack_s']:.0f} "
                     f"| {q['unpack_peak_bytes'] / mib:.1f} |")
    lines += ["", f"Machine: {doc['meta']['machine']}; torch {doc['meta']['torch']}, numpy {doc['meta']['numpy']}.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", action="append", default=[], metavar="MODEL=PATH",
                        help="measure this trained artifact too (MODEL: digits or kws)")
    parser.add_argument("--train", action="store_true", help="run both bundled recipes and measure their artifacts")
    parser.add_argument("--out", type=Path, default=RESULTS / "artifact_size.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            rows.append(measure(name, train_free(name, Path(tmp)), "train-free"))
        for spec in args.artifact:
            name, _, path = spec.partition("=")
            if name not in MODELS or not path:
                parser.error(f"--artifact: expected digits=PATH or kws=PATH, got {spec!r}")
            rows.append(measure(name, Path(path), "trained"))
        if args.train:
            for name in MODELS:
                rows.append(measure(name, trained(name, Path(tmp)), "trained"))
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    doc = {"meta": {"machine": machine, "python": sys.version.split()[0], "torch": torch.__version__,
                    "numpy": np.__version__, "goal": GOAL},
           "artifacts": rows, "packing": packing()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    (args.out.parent / "ARTIFACT_SIZE.md").write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    return 0 if all(r["goal_met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
