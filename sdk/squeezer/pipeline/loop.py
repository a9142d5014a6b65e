"""The epoch loop of one stage: seeding, DDP, checkpoints after every epoch, graceful Ctrl-C."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer import compress
from squeezer.errors import SqueezerError, TrainingError, first_line
from squeezer.pipeline import checkpoint, distributed
from squeezer.pipeline.context import Context
from squeezer.pipeline.events import Checkpointed, EpochEnded, StageEnded, StageStarted, StepEnded
from squeezer.pipeline.stages import RUNNERS, StageRunner
from squeezer.pipeline.stages.base import prefixed
from squeezer.pipeline.training import check_loss, evaluate, make_optimizer, set_lr
from squeezer.recipe.loader import recipe_to_dict

CHECKPOINT = Path("checkpoints") / "last.safetensors"
State = tuple[dict[str, torch.Tensor], dict[str, Any]]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: the current step finished and a checkpoint was written; ``resume`` continues."""

    def __init__(self, checkpoint_path: Path) -> None:
        super().__init__(f"interrupted; checkpoint written to {checkpoint_path}")
        self.checkpoint = checkpoint_path


class _StopFlag:
    """Set by the first SIGINT; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


@contextmanager
def graceful_sigint() -> Iterator[_StopFlag]:
    """Within the block, Ctrl-C asks the loop to stop after the current step."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, flag.handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def seed_epoch(seed: int, stage: int, epoch: int) -> None:
    """Each epoch reseeds from (seed, stage, epoch): shuffling and dropout do not depend on how
    the run got here, which makes a resumed run equal an uninterrupted one."""
    torch.manual_seed((seed * 1_000_003 + stage * 10_007 + epoch) % (2**63))


def run_stage(ctx: Context, index: int, state: State | None, stop: _StopFlag) -> None:
    """Run stage ``index``; ``state`` is the checkpoint to continue from (mid-stage), if any."""
    cfg = ctx.recipe.stages[index]
    runner: StageRunner = RUNNERS[cfg.TYPE](ctx, cfg, index)
    seed_epoch(ctx.recipe.seed, index, -1)
    runner.prepare(resuming=state is not None)
    start_epoch, skip_steps = (state[1]["epoch"], state[1].get("step", 0)) if state else (0, 0)
    if state is not None:
        runner.load_extra(prefixed(state[0], "extra."))
    epochs = runner.epochs()
    optimizer = make_optimizer(runner.param_groups(), runner.optim) if epochs > start_epoch else None
    names = _param_names(ctx.model, runner)
    if state is not None and optimizer is not None:
        checkpoint.restore_optimizer(optimizer, names, state[0], state[1]["optim_scalars"])
    loader = distributed.shard_loader(ctx.train_loader, ctx.dist, ctx.recipe.seed + index)
    net = distributed.wrap(runner.network(), ctx.dist, ctx.device) if epochs > start_epoch else runner.network()
    steps = len(loader)
    ctx.sink(StageStarted(index, cfg.label, cfg.TYPE, epochs, steps))
    where = f"stages[{index}] ({cfg.label})"
    for epoch in range(start_epoch, epochs):
        assert optimizer is not None
        seed_epoch(ctx.recipe.seed, index, epoch)
        distributed.set_epoch(loader, epoch)
        if skip_steps == 0:  # a resumed epoch already had its pruning round
            before = compress.masks(ctx.model)
            runner.before_epoch(epoch, optimizer)
            if any(not torch.equal(before[k], m) for k, m in compress.masks(ctx.model).items()):
                distributed.broadcast_masks(ctx.model, ctx.dist)
            _adopt_new_parameters(optimizer, ctx.model, names)
        net.train()
        total, sums, counted = 0.0, dict[str, float](), 0
        for step, batch in enumerate(loader):
            if step < skip_steps:
                continue
            if step == skip_steps and state is not None and "rng" in state[0]:
                torch.set_rng_state(state[0]["rng"])  # the generator as it was when interrupted
            set_lr(optimizer, runner.optim, runner.progress(epoch, step, steps))
            optimizer.zero_grad(set_to_none=True)
            value, extra = _train_step(ctx, runner, net, batch, epoch, f"{where} epoch {epoch + 1} step {step + 1}")
            optimizer.step()
            total += value
            for key, part in extra.items():  # the step's loss parts, reported as the epoch's means
                sums[key] = sums.get(key, 0.0) + part
            counted += 1
            ctx.sink(StepEnded(index, epoch, step, value))
            if distributed.any_rank(stop.requested, ctx.dist, ctx.device) and step + 1 < steps:
                path = save(ctx, runner, optimizer, names, index, epoch, step + 1)
                raise Interrupted(path)
        skip_steps = 0
        _, acc = evaluate(ctx.model, ctx.val_loader, ctx.device, ctx.task)
        metrics = {**{k: v / max(1, counted) for k, v in sums.items()}, **runner.epoch_metrics()}
        ctx.sink(EpochEnded(index, epoch, total / max(1, steps), acc, compress.sparsity(ctx.model),
                            bits_label(ctx.model), metrics, ctx.task.metric))
        if epoch + 1 < epochs:
            path = save(ctx, runner, optimizer, names, index, epoch + 1)
            if distributed.any_rank(stop.requested, ctx.dist, ctx.device):
                raise Interrupted(path)
    runner.finish()
    accuracy = evaluate(ctx.model, ctx.val_loader, ctx.device, ctx.task)[1]
    ctx.record.stage_accuracy[str(index)] = accuracy
    ctx.sink(StageEnded(index, cfg.label, accuracy, ctx.task.metric))
    path = save(ctx, None, None, {}, index + 1, 0)
    if distributed.any_rank(stop.requested, ctx.dist, ctx.device) and index + 1 < len(ctx.recipe.stages):
        raise Interrupted(path)


def _train_step(ctx: Context, runner: StageRunner, net: nn.Module, batch: Any, epoch: int,
                where: str) -> tuple[float, dict[str, float]]:
    """One forward and backward; what the user's model or data break there is one TrainingError
    naming the step and both factories (the first batch was checked before training started)."""
    try:
        loss, extra = runner.step(net, batch, epoch)
        value = check_loss(loss, where)
        loss.backward()
    except SqueezerError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise TrainingError(f"{where}: {type(exc).__name__}: {first} (a batch of data.factory "
                            f"{ctx.recipe.data.factory!r} through the model)") from exc
    return value, extra


def _adopt_new_parameters(optimizer: torch.optim.Optimizer, model: nn.Module, names: dict[int, str]) -> None:
    """Parameters created mid-stage (e.g. quantizer steps of a later pruning round) join the optimizer."""
    known = {id(p) for group in optimizer.param_groups for p in group["params"]}
    new = [(n, p) for n, p in model.named_parameters() if id(p) not in known and p.requires_grad]
    if new:
        optimizer.add_param_group({"params": [p for _, p in new]})
        names.update({id(p): f"model.{n}" for n, p in new})


def _param_names(model: nn.Module, runner: StageRunner) -> dict[int, str]:
    names = {id(p): f"model.{n}" for n, p in model.named_parameters()}
    for extra, module in runner.extra_modules().items():
        names.update({id(p): f"extra.{extra}.{n}" for n, p in module.named_parameters()})
    return names


def bits_label(model: nn.Module) -> str:
    bits = sorted({int(getattr(p.quantizer, "bits", 32)) for _, p in compress.compressed_weights(model)
                   if p.quantizer is not None})
    return "/".join(map(str, bits)) if bits else "fp32"


def save(ctx: Context, runner: StageRunner | None, optimizer: torch.optim.Optimizer | None,
         names: dict[int, str], stage: int, epoch: int, step: int = 0) -> Path:
    """Write the checkpoint (rank 0 only; atomic) and return its path.

    ``(stage, epoch, step)`` is where a resumed run continues; a mid-epoch checkpoint also keeps
    torch's RNG state so the rest of the epoch draws what it would have drawn.
    """
    path = ctx.out_dir / CHECKPOINT
    if ctx.dist.is_main:
        tensors = {f"model.{k}": v for k, v in ctx.model.state_dict().items()}
        scalars: dict[str, Any] = {}
        if runner is not None:
            for name, module in runner.extra_modules().items():
                tensors.update({f"extra.{name}.{k}": v for k, v in module.state_dict().items()})
        if optimizer is not None:
            optim_tensors, scalars = checkpoint.optimizer_tensors(optimizer, names)
            tensors.update(optim_tensors)
        if step:
            tensors["rng"] = torch.get_rng_state()
        meta = {
            "stage": stage,
            "epoch": epoch,
            "step": step,
            "spec": compress.spec(ctx.model),
            "records": ctx.record.to_json(),
            "optim_scalars": scalars,
            "recipe_hash": ctx.recipe_hash,
            "recipe": recipe_to_dict(ctx.recipe),
        }
        checkpoint.save(path, tensors, meta)
        ctx.sink(Checkpointed(str(path)))
    distributed.barrier(ctx.dist)
    return path
