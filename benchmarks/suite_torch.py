"""Plain PyTorch on a suite member: the ``torch_baseline`` method of ``suite_run.py`` (issue 16's
goal that squeezer reach at least the best of plain PyTorch and the peers on *every* member).

What an engineer without squeezer would write with torch alone, at the recipe's budget and learning
rates (``accuracy.budget`` of ``suite_run``'s recipe: Adam, one cosine schedule per phase, restarted
every round):
the dense stage; then ``torch.nn.utils.prune.global_unstructured`` (L1) to squeezer's geometric
sparsities, each round followed by training with per-channel symmetric
``torch.ao.quantization.FakeQuantize`` on the weights from the first round on (the first
compressed weight at 8 bits, as the recipe's ``@first``) and, when the recipe quantizes activations,
torch's per-tensor affine activation ``FakeQuantize`` at those bits on every compressed layer's
input, also from the first round (as the recipe's ``activations``); then QAT fine-tuning for the epochs
squeezer spends in Phase 2. It compresses the parameters squeezer's default targeting picks
(``squeezer.compress.targets.resolve``: Linear and convolution weights, RNN gate matrices), so both
compress the same weights, and it reports the same splits and accounted size as the PQK rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmarks import accuracy as acc


class _FakeQuantWeights:
    """Forward pre-hook: ``module.<attr> = fake_quant(<attr>_orig * <attr>_mask)`` for each of a
    module's pruned weights; it must run after torch's pruning hook, so it is re-registered after
    every ``global_unstructured`` call."""

    def __init__(self, quantizers: dict[str, nn.Module]) -> None:
        self.quantizers = quantizers

    def __call__(self, module: nn.Module, _inputs: Any) -> None:
        for attr, fq in self.quantizers.items():
            setattr(module, attr, fq(getattr(module, f"{attr}_orig") * getattr(module, f"{attr}_mask")))


class _FakeQuantInput:
    """Forward pre-hook: the module's first input through an activation ``FakeQuantize``."""

    def __init__(self, fq: nn.Module) -> None:
        self.fq = fq

    def __call__(self, _module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self.fq(inputs[0]), *inputs[1:])


def _activation_fake_quant(bits: int) -> nn.Module:
    """torch's default activation fake-quant (per tensor, affine, moving-average min/max) at ``bits``."""
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

    return FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2 ** bits - 1,
                                  dtype=torch.quint8, qscheme=torch.per_tensor_affine)()


def _baked(model: nn.Module, build: Any, targets: list[tuple[nn.Module, str, nn.Module]],
           paths: list[str], inputs: dict[str, nn.Module]) -> nn.Module:
    """A fresh model holding the deployed weights, ``fake_quant(orig * mask)`` at every target, and
    the (frozen) activation fake-quants of ``inputs`` (module path -> FakeQuantize) on its inputs."""
    from torch.ao.quantization import disable_observer

    model.apply(disable_observer)
    state = {k: v for k, v in model.state_dict().items()
             if not k.endswith(("_orig", "_mask")) and "_fake_quant_" not in k}
    with torch.no_grad():
        for path, (module, attr, fq) in zip(paths, targets, strict=True):
            state[path] = fq(getattr(module, f"{attr}_orig") * getattr(module, f"{attr}_mask")).detach()
    baked = build()
    baked.load_state_dict(state)
    for path, fq in inputs.items():
        baked.get_submodule(path).register_forward_pre_hook(_FakeQuantInput(fq))
    return baked.eval()


def run_torch_baseline(member: Any, seed: int, sparsity: float, bits: int, scale: float,
                       data_options: dict[str, Any] | None = None) -> dict[str, Any]:
    from benchmarks.suite_run import bundled_recipe, eval_splits, sizes, split_accuracies
    from torch.ao.quantization import enable_observer
    from torch.nn.utils import prune

    from squeezer.compress.targets import Targets, get_submodule_and_attr, resolve

    recipe = bundled_recipe()  # suite_run's recipe: pqk.toml or its --recipe candidate
    b = acc.budget(scale, recipe)
    activations = recipe["stages"][1].get("activations")
    act_bits = activations.get("bits") if isinstance(activations, dict) else activations
    splits = eval_splits(member, data_options)
    torch.manual_seed(seed)
    model = member.build_model()
    train, _val = member.loaders(batch_size=b["batch_size"], **(data_options or {}))
    paths = list(resolve(model, Targets()).targets)

    opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=b["lr_dense"])
    acc.train_epochs(model, train, opt, b["lr_dense"], b["dense_epochs"])
    dense = split_accuracies(model, splits)

    owners = [get_submodule_and_attr(model, p) for p in paths]
    layer_bits = [acc.FIRST_LAYER_BITS] + [bits] * (len(paths) - 1)  # the recipe's '@first' at 8 bits
    fqs = [acc.make_fake_quant(k) for k in layer_bits]
    by_module: dict[nn.Module, dict[str, nn.Module]] = {}
    for i, ((module, attr), fq) in enumerate(zip(owners, fqs, strict=True)):
        module.add_module(f"weight_fake_quant_{i}", fq)
        by_module.setdefault(module, {})[attr] = fq
    names = {m: n for n, m in model.named_modules()}
    inputs = {names[m]: _activation_fake_quant(act_bits) for m in by_module} if act_bits else {}
    for path, fq in inputs.items():  # as the recipe's activations: each compressed layer's input, from round 1
        module = model.get_submodule(path)
        module.add_module("input_fake_quant_", fq)
        module.register_forward_pre_hook(_FakeQuantInput(fq))
    handles: list[Any] = []
    previous, opt_ready = 0.0, False
    for target in acc.geometric(sparsity, b["rounds"]):
        # global_unstructured prunes a fraction of the *remaining* weights
        prune.global_unstructured(owners, pruning_method=prune.L1Unstructured,
                                  amount=1.0 - (1.0 - target) / (1.0 - previous))
        previous = target
        for h in handles:
            h.remove()
        handles = [m.register_forward_pre_hook(_FakeQuantWeights(q)) for m, q in by_module.items()]
        if not opt_ready:  # after the first round: the fake-quant observers' state exists then
            opt, opt_ready = torch.optim.Adam(model.parameters(), lr=b["lr_prune"]), True
        else:
            acc.forget_pruned(owners, opt)
        acc.train_epochs(model, train, opt, b["lr_prune"], b["epochs_per_round"])
    quantized = [(module, attr, fq) for (module, attr), fq in zip(owners, fqs, strict=True)]
    phase1 = split_accuracies(_baked(model, member.build_model, quantized, paths, inputs), splits)
    model.apply(enable_observer)  # _baked froze them; QAT fine-tuning observes again, as in the rounds
    opt = torch.optim.Adam(model.parameters(), lr=b["lr_phase2"])
    acc.train_epochs(model, train, opt, b["lr_phase2"], b["phase2_epochs"])
    student = _baked(model, member.build_model, quantized, paths, inputs)
    final = split_accuracies(student, splits)

    layers = []
    for path, k in zip(paths, layer_bits, strict=True):
        w = student.get_parameter(path)
        layers.append((path, w.numel(), int((w != 0).sum()), k))
    numel, nnz = sum(n for _, n, _, _ in layers), sum(z for _, _, z, _ in layers)
    return {"student": final, "dense": {**dense, "epochs": b["dense_epochs"]},
            "stage_accuracy": {"0": dense["val"], "1": phase1["val"], "2": final["val"]},
            "sparsity": 1.0 - nnz / numel, "activation_bits": act_bits, **sizes(student, tuple(layers)),
            "layers": [{"layer": p, "numel": n, "nnz": z, "bits": k} for p, n, z, k in layers],
            "epochs": b["total_epochs"]}


def torch_section(meta: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """PQK against plain PyTorch (``torch_baseline``) on every member, paired by seed."""
    import statistics

    from benchmarks.suite_run import _ms, _paired

    base_runs = [r for r in runs if r["method"] == "torch_baseline"]
    if not base_runs:
        return []
    lines = ["", "## PQK vs plain PyTorch at the same budget (issue 16: at least the best of plain PyTorch "
             "and the peers)", "",
             "*torch*: `benchmarks/suite_torch.py`: torch's `global_unstructured` L1 pruning to the same geometric "
             "sparsities + per-channel `FakeQuantize` weight QAT (first compressed weight 8-bit), then QAT "
             "fine-tuning, on the weights squeezer compresses, with the recipe's epochs and learning rates; "
             "with the recipe's activation bits, torch's per-tensor `FakeQuantize` on those layers' inputs. "
             "Paired by seed (only seeds with both runs). *Accounted*: the same size formula for both.", "",
             "| model | seeds | torch val | PQK val | PQK − torch (val) | torch test | PQK test "
             "| PQK − torch (test) | torch train | torch Phase 1 val | accounted B (torch / PQK) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    means: dict[str, float] = {}
    for name in meta["models"]:
        base = {r["seed"]: r for r in base_runs if r["model"] == name}
        pqk = {r["seed"]: r for r in runs if r["model"] == name and r["method"] == "pqk" and r["seed"] in base}
        seeds = sorted(set(base) & set(pqk))
        if not seeds:
            continue

        def split(rows: dict[int, Any], key: str, seeds: list[int] = seeds) -> dict[int, float]:
            return {sd: rows[sd]["student"][key] for sd in seeds}

        test_gap = _paired(split(pqk, "test"), split(base, "test"))
        means[name] = statistics.mean(test_gap)
        lines.append(
            f"| {name} | {seeds} | {_ms(list(split(base, 'val').values()))} | {_ms(list(split(pqk, 'val').values()))} "
            f"| {_ms(_paired(split(pqk, 'val'), split(base, 'val')))} | {_ms(list(split(base, 'test').values()))} "
            f"| {_ms(list(split(pqk, 'test').values()))} | {_ms(test_gap)} "
            f"| {_ms(list(split(base, 'train').values()))} "
            f"| {_ms([base[sd]['stage_accuracy']['1'] for sd in seeds])} "
            f"| {_ms([base[sd]['accounted_bytes'] for sd in seeds], 0)} / "
            f"{_ms([pqk[sd]['accounted_bytes'] for sd in seeds], 0)} |")
    ahead = [n for n, m in means.items() if m >= 0.0]
    lines += ["", f"PQK at or above plain PyTorch (mean paired test): {len(ahead)} of {len(means)} members "
              f"({', '.join(ahead) or 'none'})."]
    return lines
