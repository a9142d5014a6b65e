"""Embedding lookups in squeezer's ONNX export: the rows gathered from the codes, then dequantized
(the default, ``onnx_qdq.gathered_weights``), against the whole table dequantized on every run, then
gathered (the export before that pass). A BERT-sized token table (30,522 x 128, 80 % pruned, 4-bit
LSQ per row, INT8 codes) with a Linear head, batch 1 x 16 tokens, onnxruntime CPU, one thread, 200
interleaved runs, median. Writes benchmarks/results/ONNX_GATHER.md. Run from the repository root."""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import squeezer
import squeezer.compress as sc
from squeezer.artifact import onnx_export, onnx_qdq
from squeezer.compress.targets import DEFAULT_TYPES, Targets

VOCAB, WIDTH, TOKENS, RUNS = 30522, 128, 16, 200


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.head = nn.Linear(WIDTH, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


def main() -> None:
    torch.manual_seed(0)
    model = Classifier().eval()
    sc.attach(model, Targets(types=(*DEFAULT_TYPES, "Embedding")))
    sc.prune(model, lambda _p, w: w.abs(), 0.8, scope="layer")
    lsq = squeezer.load_registry(autoload=False).create("quantizer", "lsq", {"bits": 4, "per_channel": True})
    sc.attach_quantizers(model, lambda _p: ("lsq", lsq))
    ids = torch.randint(0, VOCAB, (1, TOKENS))
    tmp = Path(tempfile.mkdtemp())
    gathered = onnx_export.export_onnx(model, tmp / "gathered.onnx", ids, int4=False)
    keep = onnx_qdq.gathered_weights
    onnx_qdq.gathered_weights = lambda *_a: {}  # the export without the pass
    try:
        whole = onnx_export.export_onnx(model, tmp / "whole.onnx", ids, int4=False)
    finally:
        onnx_qdq.gathered_weights = keep
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry(onnx_export.ORT_MATMULNBITS_ACCURACY, "1")
    sessions = {k: ort.InferenceSession(str(tmp / f"{k}.onnx"), options, providers=["CPUExecutionProvider"])
                for k in ("whole", "gathered")}
    feed = {sessions["whole"].get_inputs()[0].name: ids.numpy()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(RUNS):
        for k, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[k].append(time.perf_counter() - start)
    ms = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    line = (f"table {VOCAB} x {WIDTH} (INT8 codes), batch 1 x {TOKENS} tokens, 1 thread: dequantize the table "
            f"then gather {ms['whole']:.3f} ms, gather the codes then dequantize the rows {ms['gathered']:.3f} ms "
            f"({ms['gathered'] / ms['whole']:.3f}x); files {whole.file_bytes:,} / {gathered.file_bytes:,} B; "
            f"weights gathered: {gathered.gathered_weights}")
    print(line)
    Path("benchmarks/results/ONNX_GATHER.md").write_text(
        "# ONNX embedding lookups: gather the codes, then dequantize the rows\n\n"
        f"Written by `benchmarks/onnx_gather.py` (its docstring has the method); onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}, {platform.machine()}, a shared 2-CPU machine.\n\n- {line}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
