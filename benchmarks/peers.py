"""Peers side by side (issue 16, item 5): squeezer PQK, plain PyTorch and peer libraries, one run.

Every method trains the bundled digits CNN (``squeezer.examples.digits:make_model``) on the suite's
fixed three-way split of the shipped digits (``benchmarks.suite.digits_cnn``: train 1,047,
validation 300, test 450; nothing is chosen on test) with the same epoch budget, the bundled
recipe's: dense 12 + prune 5 rounds x 4 + Phase 2 (2 warm-up + 10) = 44 epochs, and the recipe's
learning rates per phase, read from the recipe (Adam; dense 0.002, prune 0.004, fine-tuning 0.0015;
cosine per phase):

- ``dense``: FP32 for all 44 epochs (plain torch; one run per seed);
- ``squeezer_pqk``: ``recipes/pqk.toml`` with the target sparsity and bits changed, driven by
  ``suite_run.run_pqk`` (LAMP pruning, LSQ on log(step), first layer 8-bit, 8-bit activations, Phase 2 mutual KD);
- ``torch_baseline``: ``torch.nn.utils.prune.global_unstructured`` (L1, squeezer's geometric
  schedule) + per-channel symmetric ``torch.ao.quantization.FakeQuantize`` weight QAT from the first
  round (first layer 8-bit), then QAT fine-tuning (``accuracy.py``'s helpers);
- ``nncf`` (OpenVINO NNCF, new torch API): ``nncf.prune(UNSTRUCTURED_MAGNITUDE_GLOBAL)`` +
  ``MultiStepMagnitudePruningScheduler`` (the same geometric ratios per round) and, from the first
  round, ``nncf.compress_weights(mode=INT4_SYM / INT2_SYM, group_size=-1, all_layers=True,
  compression_format=CompressionFormat.FQ)``: fake-quantized weights with trainable scales; the
  model's own parameters, which ``compress_weights`` freezes, are unfrozen (full QAT);
  ``nncf.quantize`` (its QAT entry point) refuses sub-8-bit weights for every target device;
- ``nncf_local``: the same with ``UNSTRUCTURED_MAGNITUDE_LOCAL`` (every layer at one ratio), the
  first conv (288 weights) left dense through ``nncf.IgnoredScope`` and the ratio raised so that
  the overall sparsity is the target (at 0.90 every layer at 0.90 pruned the first conv to 29
  weights and ended near 35 % in a first run);
- ``brevitas``: the same CNN built from ``brevitas.nn.QuantConv2d`` / ``QuantLinear`` with
  ``Int8WeightPerChannelFloat`` at ``weight_bit_width`` bits and a learned per-channel scale
  (``weight_scaling_impl_type='parameter_from_stats'``), first layer 8-bit, pruned with torch's
  ``global_unstructured`` (Brevitas has no pruning); dense weights loaded from the dense stage;
- ``torchao``: ``quantize_(model, QATConfig(IntxFakeQuantizeConfig(int4/int2, per channel,
  symmetric), step="prepare"))`` + torch pruning, then ``step="convert"`` with
  ``IntxWeightOnlyConfig``; torchao's QAT swaps only ``nn.Linear`` (convolutions stay FP32).

Reported per run: validation, test and (unaugmented) training accuracy, the achieved sparsity,
``size_bytes`` (``accuracy.size_bytes``: per compressed weight ``nnz * bits + numel * H(density)``
+ an fp32 scale per output channel, everything else fp32; the bits each method really uses) and
``file_bytes``: the bytes of what the method can deploy (see PEERS.md). Writes
``results/peers.json`` (after every run), ``results/PEERS.md`` and ``results/peers.png``.

Needs the peers (not installed in CI; the default tests never import this file)::

    pip install -c constraints.txt -e '.[bench]'
    python benchmarks/peers.py --seeds 3 --jobs 2
    python benchmarks/peers.py --seeds 1 --epochs-scale 0.1 --out /tmp/peers/peers.json   # smoke
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import accuracy as acc  # noqa: E402  (benchmarks/accuracy.py: budget, schedule, size, loops)
from report import keep_hand_written  # noqa: E402

CONFIGS = ((0.90, 4), (0.98, 2))
METHODS = ("dense", "squeezer_pqk", "torch_baseline", "nncf", "nncf_local", "brevitas", "torchao")
PEER_PACKAGES = ("nncf", "brevitas", "torchao")
LABELS = {
    "dense": "dense FP32 (44 epochs)",
    "squeezer_pqk": "squeezer PQK (pqk.toml)",
    "torch_baseline": "plain PyTorch (prune + FakeQuantize)",
    "nncf": "NNCF global magnitude + FQ weights",
    "nncf_local": "NNCF local magnitude (first conv dense) + FQ weights",
    "brevitas": "Brevitas learned-scale QAT + torch prune",
    "torchao": "torchao QAT (Linear only) + torch prune",
}


# --------------------------------------------------------------------------------------------
# data and evaluation
# --------------------------------------------------------------------------------------------
def splits() -> Any:
    from benchmarks.suite.digits_cnn import make_splits

    return make_splits()


def loaders(batch_size: int) -> tuple[Any, Any]:
    from benchmarks.suite.digits_cnn import make_loaders

    return make_loaders(batch_size=batch_size)


def split_acc(model: nn.Module) -> dict[str, float]:
    from suite_run import split_accuracies

    return split_accuracies(model, splits())


def saved_bytes(obj: Any) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


class Wrapped(nn.Module):
    """The digits CNN under one attribute: NNCF's hook storage becomes a child of the root module,
    and a bare ``nn.Sequential`` would call it as a layer (``NotImplementedError: HookStorage``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------------
# one generic "dense -> rounds of prune + QAT -> QAT fine-tuning" loop for torch and the peers
# --------------------------------------------------------------------------------------------
class Peer:
    """Hooks of one method: ``build`` a model, ``prune_to`` a global sparsity, ``start_qat`` once
    (after the first pruning), report ``layers`` and ``deploy`` bytes."""

    name = ""
    qat_before_prune = False  # torchao: its module swap must come before torch's pruning hooks

    def __init__(self, bits: int, b: dict[str, Any]) -> None:
        self.bits, self.b = bits, b

    def build(self) -> nn.Module:
        return acc.fresh_model()

    def after_dense(self, model: nn.Module) -> nn.Module:
        return model

    def prune_to(self, model: nn.Module, target: float, previous: float) -> None:
        raise NotImplementedError

    def start_qat(self, model: nn.Module) -> nn.Module:
        return model

    def evaluate_final(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        return model, {}

    def layers(self, model: nn.Module) -> list[tuple[str, int, int, int, int]]:
        raise NotImplementedError

    def deploy(self, model: nn.Module) -> dict[str, Any]:
        raise NotImplementedError


def torch_prune_to(modules: list[nn.Module], target: float, previous: float) -> None:
    from torch.nn.utils import prune

    amount = 1.0 - (1.0 - target) / (1.0 - previous)  # a fraction of the remaining weights
    prune.global_unstructured([(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=amount)


def mask_of(m: nn.Module) -> torch.Tensor:
    mask = getattr(m, "weight_mask", None)
    return mask if mask is not None else torch.ones_like(m.weight)


class TorchBaseline(Peer):
    name = "torch_baseline"

    def prune_to(self, model: nn.Module, target: float, previous: float) -> None:
        layers = acc.target_layers(model)
        torch_prune_to([m for _, m in layers], target, previous)
        for h in getattr(self, "handles", []):  # keep fake quant after the re-registered pruning hook
            h.remove()
        if hasattr(self, "fqs"):
            self.handles = [m.register_forward_pre_hook(acc._WeightFakeQuant(self.fqs[n])) for n, m in layers]

    def start_qat(self, model: nn.Module) -> nn.Module:
        layers = acc.target_layers(model)
        self.fqs = {n: acc.make_fake_quant(acc.FIRST_LAYER_BITS if i == 0 else self.bits)
                    for i, (n, _) in enumerate(layers)}
        for n, fq in self.fqs.items():
            model.get_submodule(n).add_module("weight_fake_quant", fq)
        self.handles = [m.register_forward_pre_hook(acc._WeightFakeQuant(self.fqs[n])) for n, m in layers]
        return model

    def evaluate_final(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        from torch.ao.quantization import disable_observer

        model.apply(disable_observer)  # FakeQuantize observes in eval mode too
        return model, {}

    def layers(self, model: nn.Module) -> list[tuple[str, int, int, int, int]]:
        return [(f"{n}.weight", m.weight_orig.numel(), int(mask_of(m).sum()),
                 acc.FIRST_LAYER_BITS if i == 0 else self.bits, m.weight_orig.shape[0])
                for i, (n, m) in enumerate(acc.target_layers(model))]

    def deploy(self, model: nn.Module) -> dict[str, Any]:
        # plain torch has no low-bit or sparse file format: the state_dict with the masks and the
        # fake quantization folded in (fp32 tensors), as torch.save writes it
        state = {}
        with torch.no_grad():
            for n, m in acc.target_layers(model):
                state[f"{n}.weight"] = self.fqs[n](m.weight_orig * m.weight_mask).clone()
        for k, v in model.state_dict().items():
            if "weight_orig" in k or "weight_mask" in k or "fake_quant" in k:
                continue
            state.setdefault(k, v)
        return {"file_bytes": saved_bytes(state), "file_format": "torch.save state_dict (fp32, dense)"}


class Brevitas(Peer):
    name = "brevitas"

    def build(self) -> nn.Module:
        return acc.fresh_model()  # float for the dense stage; swapped for Brevitas layers after it

    def after_dense(self, model: nn.Module) -> nn.Module:
        from brevitas.nn import QuantConv2d, QuantLinear
        from brevitas.quant import Int8WeightPerChannelFloat

        state = model.state_dict()
        layers: list[nn.Module] = []
        first = True
        for m in model:
            kw = {"weight_quant": Int8WeightPerChannelFloat, "weight_scaling_impl_type": "parameter_from_stats",
                  "weight_bit_width": acc.FIRST_LAYER_BITS if first else self.bits}
            if isinstance(m, nn.Conv2d):
                layers.append(QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding,
                                          bias=m.bias is not None, **kw))
                first = False
            elif isinstance(m, nn.Linear):
                layers.append(QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, **kw))
                first = False
            else:
                layers.append(m)
        q = nn.Sequential(*layers)
        missing, unexpected = q.load_state_dict(state, strict=False)
        assert not unexpected and all("weight_quant" in k for k in missing), (missing, unexpected)
        return q

    def prune_to(self, model: nn.Module, target: float, previous: float) -> None:
        torch_prune_to([m for _, m in acc.target_layers(model)], target, previous)

    def layers(self, model: nn.Module) -> list[tuple[str, int, int, int, int]]:
        out = []
        for i, (n, m) in enumerate(acc.target_layers(model)):
            w = m.quant_weight()
            nnz = int((w.value != 0).sum())  # what the integer codes keep (narrow range: 0 is a level)
            bits = acc.FIRST_LAYER_BITS if i == 0 else self.bits
            out.append((f"{n}.weight", w.value.numel(), nnz, bits, w.value.shape[0]))
        return out

    def deploy(self, model: nn.Module) -> dict[str, Any]:
        from brevitas.export import export_onnx_qcdq
        from torch.nn.utils import prune

        for _, m in acc.target_layers(model):
            if hasattr(m, "weight_mask"):
                prune.remove(m, "weight")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            model.eval()
            export_onnx_qcdq(model, torch.zeros(1, 1, 8, 8), export_path=str(path))
            return {"file_bytes": path.stat().st_size,
                    "file_format": "Brevitas export_onnx_qcdq ONNX (dense; weights + QuantizeLinear/Clip/"
                                   "DequantizeLinear nodes)"}


class TorchAO(Peer):
    name = "torchao"
    qat_before_prune = True

    def _dtype(self) -> Any:
        return {4: torch.int4, 2: torch.int2, 8: torch.int8}[self.bits]

    def prune_to(self, model: nn.Module, target: float, previous: float) -> None:
        torch_prune_to([m for _, m in acc.target_layers(model)], target, previous)

    def start_qat(self, model: nn.Module) -> nn.Module:
        from torchao.quantization import quantize_
        from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

        wcfg = IntxFakeQuantizeConfig(self._dtype(), granularity="per_channel", is_symmetric=True)
        quantize_(model, QATConfig(weight_config=wcfg, step="prepare"))  # swaps nn.Linear only
        return model

    def evaluate_final(self, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        from torch.nn.utils import prune
        from torchao.quantization import IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerAxis
        from torchao.quantization.qat import QATConfig

        self.stats = self._layers(model)
        fake = split_acc(model)
        for _, m in acc.target_layers(model):
            if hasattr(m, "weight_mask"):
                prune.remove(m, "weight")
        quantize_(model, QATConfig(IntxWeightOnlyConfig(weight_dtype=self._dtype(), granularity=PerAxis(0)),
                                   step="convert"))
        return model, {"fake_quant_accuracy": fake}

    def _layers(self, model: nn.Module) -> list[tuple[str, int, int, int, int]]:
        out = []
        for n, m in acc.target_layers(model):
            quantized = type(m).__name__ == "FakeQuantizedLinear"
            out.append((f"{n}.weight", m.weight.numel(), int(mask_of(m).sum()), self.bits if quantized else 32,
                        m.weight.shape[0]))
        return out

    def layers(self, model: nn.Module) -> list[tuple[str, int, int, int, int]]:
        return self.stats

    def deploy(self, model: nn.Module) -> dict[str, Any]:
        return {"file_bytes": saved_bytes(model.state_dict()),
                "file_format": "torch.save state_dict after convert (Linear: intx codes in int8 storage; conv fp32)"}


class NNCF(Peer):
    name = "nncf"
    local = False

    def _mode(self) -> Any:
        from nncf.parameters import PruneMode

        return PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL if self.local else PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL

    def build(self) -> nn.Module:
        return Wrapped(acc.fresh_model())

    def prune_to(self, model: nn.Module, target: float, previous: float) -> None:
        import nncf
        from nncf.torch.function_hook.pruning.magnitude.schedulers import MultiStepMagnitudePruningScheduler

        if previous == 0.0:
            numel = [m.weight.numel() for _, m in acc.target_layers(model)]
            # nncf_local: the first conv (288 weights) excluded through NNCF's IgnoredScope, the others
            # pruned to the ratio that gives the same overall sparsity as every other method
            scale = sum(numel) / (sum(numel) - numel[0]) if self.local else 1.0
            ratios = [r * scale for r in acc.geometric(self.target, self.b["rounds"])]
            ignored = nncf.IgnoredScope(names=["net/0/conv2d/0"]) if self.local else None
            nncf.prune(model, mode=self._mode(), ratio=ratios[0], ignored_scope=ignored,
                       examples_inputs=torch.zeros(1, 1, 8, 8))
            self.scheduler = MultiStepMagnitudePruningScheduler(
                model, mode=self._mode(), steps=dict(enumerate(ratios)))
        self.scheduler.step()  # one step per pruning round

    def start_qat(self, model: nn.Module) -> nn.Module:
        import nncf

        train, _ = loaders(self.b["batch_size"])
        # INT2_SYM exists for compress_weights but not in its trainable FQ format (KeyError in NNCF
        # 3.4): at 2 bits NNCF runs at INT4, labelled in the report
        mode = nncf.CompressWeightsMode.INT4_SYM
        model = nncf.compress_weights(model, mode=mode, group_size=-1, ratio=1.0, all_layers=True,
                                      dataset=nncf.Dataset(train, lambda batch: batch[0]),
                                      compression_format=nncf.CompressionFormat.FQ)
        # compress_weights freezes every model parameter (BatchNorm included): it is built to tune the
        # quantizer scales (and LoRA adapters) of a large model. Frozen, the pruned weights never recover
        # (0.98 ended at chance in a first run); unfrozen, NNCF does full QAT like every other method here
        for name, param in model.named_parameters():
            if "__nncf_hooks" not in name:
                param.requires_grad_(True)
        return model

    def _hooks(self, model: nn.Module) -> dict[str, dict[str, Any]]:
        from nncf.torch.function_hook.pruning.magnitude.algo import get_pruned_modules

        masks = get_pruned_modules(model)
        out: dict[str, dict[str, Any]] = {}
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if "post_hooks" in name and name.endswith("_num_bits"):
                layer = name.split("post_hooks.")[1].split("__")[0].replace(":", ".")
                out.setdefault(layer, {})["bits"] = int(t.item())
        for layer, hook in masks.items():
            out.setdefault(layer, {})["mask"] = hook.binary_mask
        return out

    def layers(self, model: nn.Module) -> list[tuple[str, int, int, int, int]]:
        hooks = self._hooks(model)
        out = []
        for n, m in acc.target_layers(model):
            h = hooks.get(f"{n}.weight", {})
            mask = h.get("mask", torch.ones_like(m.weight))
            out.append((f"{n}.weight", m.weight.numel(), int(mask.sum()), h.get("bits", 32), m.weight.shape[0]))
        return out

    def deploy(self, model: nn.Module) -> dict[str, Any]:
        import nncf

        stripped = nncf.strip(model, do_copy=True, strip_format=nncf.StripFormat.DQ,
                              example_input=torch.zeros(1, 1, 8, 8))
        state = stripped.state_dict()
        ints = {str(v.dtype) for v in state.values() if not v.is_floating_point()}
        return {"file_bytes": saved_bytes(state),
                "file_format": f"nncf.strip(DQ) torch state_dict (integer storage {sorted(ints)}; NNCF deploys "
                               "via OpenVINO IR, not installed here)"}


class NNCFLocal(NNCF):
    name = "nncf_local"
    local = True


PEERS: dict[str, type[Peer]] = {c.name: c for c in (TorchBaseline, Brevitas, TorchAO, NNCF, NNCFLocal)}


def run_peer(name: str, seed: int, b: dict[str, Any], sparsity: float, bits: int) -> dict[str, Any]:
    peer = PEERS[name](bits, b)
    peer.target = sparsity  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    model = peer.build()
    train, _ = loaders(b["batch_size"])
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_dense"])
    acc.train_epochs(model, train, opt, b["lr_dense"], b["dense_epochs"])
    dense = split_acc(model)
    model = peer.after_dense(model)
    if peer.qat_before_prune:
        model = peer.start_qat(model)
    previous = 0.0
    for r, target in enumerate(acc.geometric(sparsity, b["rounds"])):
        peer.prune_to(model, target, previous)
        previous = target
        if r == 0 and not peer.qat_before_prune:
            model = peer.start_qat(model)
        opt = torch.optim.Adam(model.parameters(), lr=b["lr_prune"])  # fresh per round
        acc.train_epochs(model, train, opt, b["lr_prune"], b["epochs_per_round"])
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_phase2"])
    acc.train_epochs(model, train, opt, b["lr_phase2"], b["phase2_epochs"])
    model, extra = peer.evaluate_final(model)
    layers = peer.layers(model)
    final = split_acc(model)
    numel, nnz = sum(s[1] for s in layers), sum(s[2] for s in layers)
    other = acc.others(acc.fresh_model(), [s[0].removeprefix("net.") for s in layers])
    row = {"student": final, "dense_stage": dense, "sparsity": 1 - nnz / numel,
           "size_bytes": acc.size_bytes(layers, other), "layer_bits": {s[0]: s[3] for s in layers},
           "layer_density": {s[0]: s[2] / s[1] for s in layers},
           "empty_layers": [s[0] for s in layers if s[2] == 0], "epochs": b["total_epochs"], **extra}
    try:
        row.update(peer.deploy(model))
    except Exception as exc:  # a failed export must not lose the accuracy
        row.update({"file_bytes": None, "file_error": f"{type(exc).__name__}: {exc}"})
    return row


def run_dense(seed: int, b: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = acc.fresh_model()
    train, _ = loaders(b["batch_size"])
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_dense"])
    acc.train_epochs(model, train, opt, b["lr_dense"], b["total_epochs"])
    layers = acc.dense_layers(model)
    return {"student": split_acc(model), "sparsity": 0.0, "epochs": b["total_epochs"],
            "size_bytes": acc.size_bytes(layers, acc.others(model, [n for n, *_ in layers])),
            "file_bytes": saved_bytes(model.state_dict()), "file_format": "torch.save state_dict (fp32)"}


def run_squeezer(seed: int, sparsity: float, bits: int, scale: float) -> dict[str, Any]:
    from benchmarks.suite import get
    from suite_run import run_pqk

    row = run_pqk(get("digits_cnn"), seed, sparsity, bits, scale)
    row["size_bytes"] = row.pop("accounted_bytes")
    row["file_bytes"] = row.get("artifact_bytes")
    row["file_format"] = "squeezer artifact (.safetensors: packed codes + compressed mask)"
    row["layer_bits"] = {x["layer"]: x["bits"] for x in row["layers"]}
    row["empty_layers"] = [x["layer"] for x in row["layers"] if x["nnz"] == 0]
    return row


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(task["threads"])
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    method, seed, cfg, b = task["method"], task["seed"], task["config"], task["budget"]
    start = time.perf_counter()
    row: dict[str, Any] = {"method": method, "config": cfg, "seed": seed}
    try:
        if method == "dense":
            row.update(run_dense(seed, b))
        elif method == "squeezer_pqk":
            row.update(run_squeezer(seed, cfg["sparsity"], cfg["bits"], task["scale"]))
        else:
            row.update(run_peer(method, seed, b, cfg["sparsity"], cfg["bits"]))
    except Exception as exc:  # one failed run must not lose the others
        row.update({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)})
    row["seconds"] = time.perf_counter() - start
    return row


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _ms(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _kb(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    return f"{statistics.mean(vals) / 1000:.1f}" if vals else "-"


NOTES = {
    "squeezer_pqk": "LAMP global pruning, LSQ (log step) weights, first layer 8-bit, 8-bit LSQ activations "
                    "(the peers quantize weights only), Phase 2 mutual KD",
    "torch_baseline": "global L1 + per-channel min/max FakeQuantize; first layer 8-bit",
    "nncf": "**4-bit at the 2-bit point** (NNCF's FQ weight format has no INT2); global magnitude on "
            "|w|/‖w‖₂ (NNCF's global mode); FQ weight compression: Linear at the bits (symmetric), "
            "convolutions fall back to INT8 asymmetric (NNCF's backup mode); weights unfrozen after compress_weights",
    "nncf_local": "as nncf (also 4-bit at the 2-bit point), every layer but the first conv (ignored scope, "
                  "dense) at one ratio",
    "brevitas": "learned per-channel scale; narrow range: 2-bit = ternary {-1, 0, 1}; first layer 8-bit",
    "torchao": "QAT swaps nn.Linear only: the three convolutions stay FP32 (pruned); min/max per-channel scale",
    "dense": "no compression",
}


def report(data: dict[str, Any]) -> str:
    meta, rows = data["meta"], data["runs"]
    ok = [r for r in rows if not r.get("error")]
    lines = ["# Peers side by side on the bundled digits CNN (issue 16, item 5)", ""]
    if meta.get("smoke"):
        lines += ["**SMOKE RUN** (reduced epochs or seeds): not a result.", ""]
    b = meta["budget"]
    lines += [
        f"One run of `benchmarks/peers.py` ({meta['seeds']} seeds, {meta['jobs']} jobs x {meta['threads']} thread, "
        f"{meta.get('wall_seconds', 0) / 60:.1f} min, {meta['started']}, commit {meta.get('commit', '?')[:10]}"
        + (f" with uncommitted changes in {', '.join(meta['sdk_modified'])}" if meta.get("sdk_modified") else "")
        + "). "
        f"Every method: the same model, data, split and {b['total_epochs']}-epoch budget (dense {b['dense_epochs']}, "
        f"prune {b['rounds']} x {b['epochs_per_round']}, fine-tune / Phase 2 {b['phase2_epochs']}), Adam at the "
        "recipe's learning rates. Split: `benchmarks.suite.digits_cnn` (train 1,047 / validation 300 / test 450); "
        "no choice was made on test (all settings are the recipe's or the peers' documented defaults).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "`size` is the accounted model size (same formula for every method: codes of the kept weights at the "
        "bits the method really uses + mask entropy + fp32 per-channel scales + other fp32 tensors); `file` is the "
        "bytes of what the method can write out to deploy (formats below). Accuracies in %, mean ± std over seeds.",
        "",
    ]
    for cfg in meta["configs"]:
        s, bits = cfg["sparsity"], cfg["bits"]
        lines += [f"## sparsity {s:.2f}, {bits}-bit weights", "",
                  "| method | val | test | train | sparsity | size (KB) | file (KB) | n | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in meta["methods"]:
            rs = [r for r in ok if r["method"] == m and (m == "dense" or r["config"] == cfg)]
            failed = [r for r in rows if r["method"] == m and r.get("error") and (m == "dense" or r["config"] == cfg)]
            if not rs:
                if failed:
                    lines.append(f"| {LABELS[m]} | failed: {failed[0]['error'][:120]} | | | | | | 0 | |")
                continue
            note = NOTES.get(m, "")
            empty = sum(1 for r in rs if r.get("empty_layers"))
            if empty:
                note += f"; **a whole layer pruned away in {empty}/{len(rs)} runs**"
            lines.append(
                f"| {LABELS[m]} | {_ms([r['student']['val'] for r in rs])} | {_ms([r['student']['test'] for r in rs])} "
                f"| {_ms([r['student']['train'] for r in rs])} | {statistics.mean(r['sparsity'] for r in rs):.3f} "
                f"| {_kb([r['size_bytes'] for r in rs])} | {_kb([r.get('file_bytes') for r in rs])} | {len(rs)} "
                f"| {note} |")
        lines.append("")
        pqk = {r["seed"]: r["student"]["test"] for r in ok if r["method"] == "squeezer_pqk" and r["config"] == cfg}
        diffs = []
        for m in meta["methods"]:
            if m in ("squeezer_pqk",):
                continue
            other = {r["seed"]: r["student"]["test"] for r in ok
                     if r["method"] == m and (m == "dense" or r["config"] == cfg)}
            d = [pqk[k] - other[k] for k in pqk if k in other]
            if d:
                diffs.append(f"{m} {_ms(d)}")
        if diffs:
            lines += ["Paired test differences, PQK − method (by seed): " + "; ".join(diffs) + ".", ""]
    lines += ["## File formats", ""]
    seen: dict[str, str] = {}
    for r in ok:
        seen.setdefault(r["method"], r.get("file_format") or r.get("file_error", ""))
    lines += [f"- {LABELS[m]}: {seen[m]}" for m in meta["methods"] if m in seen]
    torchao_rows = [r for r in ok if r["method"] == "torchao" and r.get("fake_quant_accuracy")]
    if torchao_rows:
        lines += ["", "torchao: the table shows the converted model (real int weights); the QAT model before convert: "
                  + "; ".join(f"s={c['sparsity']}/{c['bits']}b test "
                              + _ms([r["fake_quant_accuracy"]["test"] for r in torchao_rows if r["config"] == c])
                              for c in meta["configs"]) + "."]
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- {r['method']} {r['config']} seed {r['seed']}: {r['error'][:300]}"
                                               for r in failed]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    meta, rows = data["meta"], [r for r in data["runs"] if not r.get("error")]
    fig, axes = plt.subplots(1, len(meta["configs"]), figsize=(6 * len(meta["configs"]), 4.5), squeeze=False)
    markers = dict(zip(METHODS, "o*sDv^P", strict=True))
    for ax, cfg in zip(axes[0], meta["configs"], strict=True):
        for m in meta["methods"]:
            rs = [r for r in rows if r["method"] == m and (m == "dense" or r["config"] == cfg)]
            if not rs:
                continue
            x = statistics.mean(r["size_bytes"] for r in rs) / 1000
            ys = [r["student"]["test"] for r in rs]
            err = statistics.stdev(ys) if len(ys) > 1 else 0.0
            ax.errorbar([x], [statistics.mean(ys)], yerr=[err], marker=markers.get(m, "o"), capsize=3, label=LABELS[m],
                        ms=9 if m == "squeezer_pqk" else 6)
        ax.set_xscale("log")
        ax.set_xlabel("accounted model size (KB, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"digits CNN, sparsity {cfg['sparsity']:.2f}, {cfg['bits']}-bit")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for pkg in ("squeezer", *PEER_PACKAGES, "onnxoptimizer"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch count (smoke runs)")
    ap.add_argument("--configs", default=None, help="SPARSITY:BITS,... (default 0.90:4,0.98:2)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    ap.add_argument("--report-only", action="store_true", help="rewrite PEERS.md / peers.png from --out")
    args = ap.parse_args(argv)
    md, png = args.out.with_name("PEERS.md"), args.out.with_suffix(".png")
    if args.report_only:
        data = json.loads(args.out.read_text(encoding="utf-8"))
        md.write_text(keep_hand_written(md, report(data)), encoding="utf-8")
        plot(data, png)
        return 0

    configs = acc.parse_configs(args.configs) if args.configs else list(CONFIGS)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if set(methods) - set(METHODS):
        raise SystemExit(f"--methods: unknown {sorted(set(methods) - set(METHODS))}")
    b = acc.budget(args.epochs_scale)
    common = {"threads": args.threads, "budget": b, "scale": args.epochs_scale}
    tasks = []
    for seed in range(args.seeds):
        if "dense" in methods:
            tasks.append({**common, "method": "dense", "seed": seed, "config": None})
        for s, bits in configs:
            tasks += [{**common, "method": m, "seed": seed, "config": {"sparsity": s, "bits": bits}}
                      for m in methods if m != "dense"]
    import suite_run

    meta = {"budget": b, "epochs_scale": args.epochs_scale, "seeds": args.seeds, "methods": methods,
            "configs": [{"sparsity": s, "bits": bits} for s, bits in configs], "threads": args.threads,
            "jobs": args.jobs, "versions": versions(), **suite_run.source_state(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "smoke": args.epochs_scale != 1.0 or args.seeds < 3}
    print(f"{len(tasks)} runs, {b['total_epochs']} epochs each, jobs={args.jobs}", flush=True)
    rows: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        st = row.get("student", {})
        what = f"val {st['val']:.2f} test {st['test']:.2f}" if st else row.get("error")
        print(f"[{len(rows)}/{len(tasks)} {time.perf_counter() - t0:6.0f}s] {row['method']:14s} {row['config']} "
              f"seed {row['seed']}: {what} ({row['seconds']:.0f}s)", flush=True)
        args.out.write_text(json.dumps({"meta": {**meta, "complete": False}, "runs": rows}, indent=1), encoding="utf-8")

    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_task, tasks):
                record(row)
    else:
        for task in tasks:
            record(run_task(task))
    meta["wall_seconds"] = time.perf_counter() - t0
    data = {"meta": {**meta, "complete": True}, "runs": rows}
    args.out.write_text(json.dumps(data, indent=1), encoding="utf-8")
    md.write_text(keep_hand_written(md, report(data)), encoding="utf-8")
    plot(data, png)
    print(f"wrote {args.out}, {md}")
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
