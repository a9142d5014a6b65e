"""Parameters and the optimizer: which are which, their groups, and state at pruned entries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from squeezer import compress
from squeezer.compress.weight import compressed_weights
from squeezer.engine.activations import CHILD_NAME as ACTIVATION_CHILD
from squeezer.engine.quantizers import quantizer_parameters


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Model parameters split into compressed weights' stored originals, quantizer parameters
    (inside a parametrization, e.g. LSQ step sizes, and the activation quantizers' steps), and
    everything else."""
    originals: list[nn.Parameter] = []
    quantizer: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if name.endswith(".original") or name == "original":
            originals.append(p)
        elif "parametrizations." in name or ACTIVATION_CHILD in name.split(".")[:-1]:
            quantizer.append(p)
        else:
            others.append(p)
    return originals, quantizer, others


def param_groups(model: nn.Module, weight_decay: float, quantizer_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """The optimizer groups of a model under compression.

    Compressed weights get weight decay only while dense: afterwards their pruned entries hold the
    unimportant weights (PQK's teacher) and must not drift. Quantizer parameters get none, and
    learn at ``quantizer_lr_scale`` times the rate (an ``lr_scale`` entry the driver applies).
    """
    originals, quantizer, others = split_parameters(model)
    dense = all(bool(p.mask.all()) for _, p in compressed_weights(model))
    return [
        {"params": originals, "weight_decay": weight_decay if dense else 0.0},
        {"params": quantizer, "weight_decay": 0.0, "lr_scale": quantizer_lr_scale},
        {"params": others},
    ]


def forget_pruned(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Zero optimizer state (momentum, Adam moments) at pruned entries so they never drift afterwards."""
    for path, p in compressed_weights(model):
        original = compress.original(model, path)
        for value in optimizer.state.get(original, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == p.mask.shape:
                value.masked_fill_(~p.mask, 0)


def fresh_state(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> None:
    """Forget the optimizer's state (step counts, moments, momentum) of ``params``.

    The recipe runner builds a new optimizer for every stage; a driver that keeps one optimizer
    across Phase 2's switch calls this so its teacher's first updates match: Adam's bias correction
    restarts with the step count, where a count left at thousands next to moments that
    :func:`forget_pruned` zeroed would make the first updates about 3x the learning rate.
    """
    for p in params:
        optimizer.state.pop(p, None)


def no_decay_on_compressed(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Move the compressed weights' stored tensors and the quantizers' parameters out of param
    groups with weight decay into groups without it (other hyperparameters kept). Idempotent.

    Once a weight is pruned its stored tensor also holds the pruned-away entries (PQK's
    unimportant weights, the teacher's in Phase 2), which no step updates and decay would shrink;
    quantizer step sizes get no decay in the recipe runner either. The runner builds its groups
    so (:func:`param_groups`); a driver whose optimizer is the user's calls this after the first
    round.
    """
    owned = {id(compress.original(model, path)) for path, _ in compressed_weights(model)}
    owned |= {id(p) for p in quantizer_parameters(model)}
    for group in list(optimizer.param_groups):
        if not group.get("weight_decay", 0.0):
            continue
        moved = [p for p in group["params"] if id(p) in owned]
        if not moved:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in owned]
        settings = {k: v for k, v in group.items() if k != "params"}
        optimizer.add_param_group({"params": moved, **settings, "weight_decay": 0.0})
