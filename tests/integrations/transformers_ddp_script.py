"""Run by test_transformers_ddp.py: SqueezerTrainerCallback in a HF ``Trainer`` under DDP, 2 CPU ranks (gloo).

``python transformers_ddp_script.py OUT`` with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set (one process per rank; accelerate sees ``use_cpu=True``
and a world size of 2 and joins a gloo process group). Four trainings, one after the other
(:data:`RUNS`):

- ``phase1``: a plain ``Trainer`` and ``SqueezerTrainerCallback`` (prune, LSQ 4-bit);
- ``mutual``: ``SqueezerTrainer`` with ``mutual=True`` (Phase 1, then PQK's Phase 2);

each with the Trainer's default gradient clipping (``max_grad_norm=1.0``) and without it
(``..._noclip``, ``max_grad_norm=0``).

Each rank writes ``OUT/{run}_rank{r}.safetensors`` (the model's state dict under ``model/``,
the self-teacher's under ``teacher/``) and ``OUT/{run}_rank{r}.json`` (counters, sparsity, bits,
the names of the parameters created during training, the sample indices it trained on). Rank 0
also writes the artifact (``OUT/{run}.artifact.safetensors``) and its eval-mode logits on the
data (``OUT/{run}.logits.safetensors``).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SQUEEZER_DISABLE_PLUGIN_AUTOLOAD", "1")

import torch
import torch.distributed as dist
import transformers
from safetensors.torch import save_file
from torch.utils.data import Dataset

import squeezer
from squeezer.compress.targets import Targets
from squeezer.compress.weight import compressed_weights
from squeezer.integrations.transformers import SqueezerTrainer, SqueezerTrainerCallback
from squeezer.session import Compression

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

N_SAMPLES = 64  # batch 8 per rank, 2 ranks: 4 optimizer steps per epoch
BATCH = 8
#: run name: (Phase 2?, max_grad_norm)
RUNS = {"phase1": (False, 1.0), "mutual": (True, 1.0), "phase1_noclip": (False, 0.0), "mutual_noclip": (True, 0.0)}


def tiny_bert() -> torch.nn.Module:
    options: dict[str, Any] = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=32, num_labels=2)
    config = transformers.BertConfig(**options)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


class Tokens(Dataset):
    """Random token sequences; the label says whether token 7 occurs. Records the indices it served."""

    def __init__(self, n: int = N_SAMPLES, length: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, length), generator=g)
        self.labels = (self.ids == 7).any(1).long()
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        self.seen.append(int(i))
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class _Phase2Snapshot(transformers.TrainerCallback):
    """Masks and stored weights when Phase 2 starts, and the distillation weight of each epoch."""

    def __init__(self, sq: SqueezerTrainerCallback) -> None:
        self.sq = sq
        self.at_start: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.kd_weights: list[float] = []

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.kd_weights.append(self.sq.kd_weight)
        if self.sq.teacher is not None and self.at_start is None:
            model = self.sq.compression.model
            self.at_start = {path: (p.mask.clone(), squeezer.compress.original(model, path).detach().clone())
                             for path, p in compressed_weights(model)}


def _args(out: Path, epochs: int, max_grad_norm: float) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, learning_rate=5e-3, save_strategy="no",
        report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
        num_train_epochs=epochs, max_grad_norm=max_grad_norm,
    )


def _state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def run(out: Path, name: str) -> None:
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    model = tiny_bert()
    registry = squeezer.load_registry(autoload=False)
    mutual, max_grad_norm = RUNS[name]
    # Phase 1 only: every Linear (the classifier too); Phase 2: the classifier stays dense
    targets = Targets(types=("Linear",), exclude=("classifier",) if mutual else ())
    comp = Compression(model, targets=targets, importance="l1", schedule=("geometric", {"target": 0.75, "rounds": 2}),
                       quantizer=("lsq", {"bits": 4}), prune_every=4, min_density=0.0, registry=registry)
    artifact = out / f"{name}.artifact.safetensors"
    callback = SqueezerTrainerCallback(comp, mutual=mutual, export=artifact)
    snapshot = _Phase2Snapshot(callback)
    data = Tokens()
    trainer_cls = SqueezerTrainer if mutual else transformers.Trainer
    # rounds after steps 4 and 8 (ends of epochs 0 and 1); with mutual, epoch 2 is Phase 2's
    # warm-up (distillation weight 0) and epoch 3 mutual distillation
    args = _args(out / f"{name}_run", 4 if mutual else 3, max_grad_norm)
    trainer = trainer_cls(model=model, args=args, train_dataset=data, callbacks=[callback, snapshot])
    before = {id(p) for p in model.parameters()}  # the masks are attached (on_init_end), the steps not yet
    trainer.train()

    optimizer = trainer.optimizer
    assert optimizer is not None
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    teacher = callback.teacher
    trainable = [p for p in model.parameters() if p.requires_grad]
    if teacher is not None:
        trainable += [p for p in teacher.parameters() if p.requires_grad]
    report: dict[str, Any] = {
        "world_size": trainer.args.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "wrapped": type(trainer.model_wrapped).__name__,
        "broadcast_buffers": bool(getattr(trainer.model_wrapped, "broadcast_buffers", False)),
        "steps": comp.steps, "global_step": trainer.state.global_step, "rounds": comp.rounds_done,
        "sparsity": comp.sparsity, "bits": comp.bits, "seen": data.seen,
        "masks": sorted(squeezer.compress.masks(model)),
        "added": sorted(n for n, p in model.named_parameters() if id(p) not in before),
        "optimizer_holds_all": all(id(p) in in_optimizer for p in trainable),
        "kd_weights": snapshot.kd_weights,
    }
    tensors = _state(model.state_dict(), "model/")
    if teacher is not None:
        tensors |= _state(teacher.state_dict(), "teacher/")
        assert snapshot.at_start is not None
        masks_frozen, pruned_nonzero, teacher_changed = True, 0, 0
        for path, p in compressed_weights(model):
            mask0, stored0 = snapshot.at_start[path]
            masks_frozen &= torch.equal(p.mask, mask0)
            stored = squeezer.compress.original(model, path).detach()
            teacher_changed += int((stored[~mask0] != stored0[~mask0]).sum())
            student = cast(torch.Tensor, model.get_submodule(path.rsplit(".", 1)[0]).weight)  # the student's view
            pruned_nonzero += int(torch.count_nonzero(student.detach()[~mask0]))
        report |= {"masks_frozen": masks_frozen, "pruned_nonzero": pruned_nonzero,
                   "teacher_changed_pruned": teacher_changed}
    save_file(tensors, str(out / f"{name}_rank{rank}.safetensors"))
    (out / f"{name}_rank{rank}.json").write_text(json.dumps(report))
    if rank == 0:
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=Tokens().ids).logits
        save_file({"logits": logits.contiguous()}, str(out / f"{name}.logits.safetensors"))
    if dist.is_initialized():
        dist.barrier()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    for name in RUNS:
        run(out, name)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
