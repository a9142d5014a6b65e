"""SqueezerTrainerCallback: ``trainer.train(resume_from_checkpoint=...)`` resumes a run from the HF
Trainer's own checkpoint.

A tiny BERT, the Trainer's own AdamW (weight decay, so Phase 2 adds a no-decay group) and linear LR
schedule, 5 epochs of 2 steps: rounds after steps 4 and 6, Phase 2 from epoch 3 (warm-up), mutual
distillation in epoch 4. A run resumed in a fresh model, callback and trainer from a checkpoint
before any pruning (mid-epoch), between the two rounds (a run that really stopped there) or at the
end of Phase 2's warm-up ends bitwise equal to the uninterrupted run: masks, step sizes, weights,
the teacher's copies, the optimizer's groups and the artifact. The data order is the Trainer's
seeded sampler, and dropout draws from the RNG state the Trainer saves and restores, so the runs
are deterministic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

import squeezer  # noqa: E402
from squeezer import compress  # noqa: E402
from squeezer.artifact.reader import read  # noqa: E402
from squeezer.compress.targets import Targets  # noqa: E402
from squeezer.compress.weight import compressed_weights  # noqa: E402
from squeezer.errors import ConfigError  # noqa: E402
from squeezer.integrations.transformers import SqueezerTrainer, SqueezerTrainerCallback  # noqa: E402
from squeezer.registry import Registry  # noqa: E402
from squeezer.session import Compression  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

EPOCHS = 5


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def tiny_bert() -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


class Tokens(Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, 100, (32, 12), generator=torch.Generator().manual_seed(0))
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class SaveAt(transformers.TrainerCallback):
    """Checkpoint after the given optimizer steps; stop after ``stop``."""

    def __init__(self, steps: set[int], stop: int | None = None) -> None:
        self.steps, self.stop = steps, stop

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        control.should_save = state.global_step in self.steps
        control.should_training_stop = state.global_step == self.stop


class Run:
    """One ``train()``: the model, the callback, the trainer, its output directory and artifact."""

    def __init__(self, registry: Registry, out: Path, *, bits: int = 4, save: SaveAt | None = None,
                 resume: Path | None = None, trainer_cls: type = SqueezerTrainer, plain_sgd: bool = False) -> None:
        self.out = out
        self.model = tiny_bert()
        comp = Compression(self.model, targets=Targets(types=("Linear",), exclude=("classifier",)), importance="l1",
                           schedule=("geometric", {"target": 0.75, "rounds": 2}), quantizer=("lsq", {"bits": bits}),
                           prune_start=4, prune_every=2, min_density=0.0, registry=registry)
        self.callback = SqueezerTrainerCallback(comp, mutual=not plain_sgd, export=out / "model.safetensors")
        optimizers: Any = (None, None)
        if plain_sgd:  # the Trainer given its optimizer and LR scheduler (Phase 1 only)
            sgd = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
            optimizers = (sgd, torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 0.9 ** step))
        args = transformers.TrainingArguments(
            output_dir=str(out), num_train_epochs=EPOCHS, per_device_train_batch_size=16, learning_rate=5e-3,
            weight_decay=0.01, save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no",
            disable_tqdm=True, seed=0, dataloader_num_workers=0)
        callbacks = [self.callback] + ([save] if save is not None else [])
        self.trainer = trainer_cls(model=self.model, args=args, train_dataset=Tokens(), callbacks=callbacks,
                                   optimizers=optimizers)
        self.trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)


@pytest.fixture(scope="module")
def uninterrupted(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return Run(registry, tmp_path_factory.mktemp("uninterrupted"), save=SaveAt({3, 8}))


def _assert_same(resumed: Run, reference: Run, phase2: bool = True) -> None:
    a, b = resumed.callback, reference.callback
    assert (a.compression.steps, a.compression.rounds_done) == (b.compression.steps, b.compression.rounds_done) == (
        10, 2)
    masks, expected = compress.masks(resumed.model), compress.masks(reference.model)
    assert masks.keys() == expected.keys() and all(torch.equal(masks[k], expected[k]) for k in masks)
    steps = {p: q.quantizer.step for p, q in compressed_weights(resumed.model)}  # type: ignore[union-attr]
    assert steps and all(torch.equal(steps[p], q.quantizer.step)  # type: ignore[union-attr]
                         for p, q in compressed_weights(reference.model))
    state, expected = resumed.model.state_dict(), reference.model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state), [k for k in state if not torch.equal(
        state[k], expected[k])]
    groups, ref_groups = resumed.trainer.optimizer.param_groups, reference.trainer.optimizer.param_groups
    assert [(len(g["params"]), g["weight_decay"], g["lr"]) for g in groups] == [
        (len(g["params"]), g["weight_decay"], g["lr"]) for g in ref_groups]
    if phase2:
        assert a.teacher is not None and b.teacher is not None
        teacher, expected = a.teacher.state_dict(), b.teacher.state_dict()
        assert teacher.keys() == expected.keys() and all(torch.equal(teacher[k], expected[k]) for k in teacher)
        assert len(groups) == 4  # decay, no decay, the stored weights and quantizer steps without decay, the teacher's
    art, ref = read(resumed.out / "model.safetensors"), read(reference.out / "model.safetensors")
    assert art.meta["layers"] == ref.meta["layers"] and art.tensors.keys() == ref.tensors.keys()
    assert all(torch.equal(art.tensors[k], ref.tensors[k]) for k in ref.tensors)


def test_resumes_between_the_pruning_rounds(registry: Registry, uninterrupted: Run, tmp_path: Path) -> None:
    stopped = Run(registry, tmp_path / "stopped", save=SaveAt({5}, stop=5))  # after round 0, before round 1
    assert stopped.callback.compression.rounds_done == 1 and stopped.callback.teacher is None
    _assert_same(Run(registry, tmp_path / "resumed", resume=stopped.out / "checkpoint-5"), uninterrupted)


@pytest.mark.parametrize("step", [3, 8], ids=["before-any-pruning", "phase2-after-warmup"])
def test_resumes_before_pruning_and_in_phase2(registry: Registry, uninterrupted: Run, tmp_path: Path,
                                              step: int) -> None:
    saved = torch.load(uninterrupted.out / f"checkpoint-{step}" / "optimizer.pt", weights_only=True)["squeezer"]
    assert saved["rounds_done"] == (0 if step == 3 else 2) and (saved["teacher"] is not None) == (step == 8)
    _assert_same(Run(registry, tmp_path, resume=uninterrupted.out / f"checkpoint-{step}"), uninterrupted)


def test_other_settings_are_refused_naming_what_differs(registry: Registry, uninterrupted: Run,
                                                        tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Run(registry, tmp_path, bits=3, resume=uninterrupted.out / "checkpoint-8")
    assert str(info.value) == ("SqueezerTrainerCallback: cannot resume: the checkpoint was written with other "
                               "settings: quantizer.options.bits (checkpoint 4, now 3)")


def test_a_plain_trainer_given_its_optimizer_and_scheduler_resumes(registry: Registry, tmp_path: Path) -> None:
    full = Run(registry, tmp_path / "full", save=SaveAt({5}), trainer_cls=transformers.Trainer, plain_sgd=True)
    resumed = Run(registry, tmp_path / "resumed", resume=full.out / "checkpoint-5", trainer_cls=transformers.Trainer,
                  plain_sgd=True)
    _assert_same(resumed, full, phase2=False)


def test_a_plain_trainer_that_builds_its_optimizer_cannot_resume(registry: Registry, uninterrupted: Run,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot resume: .* needs SqueezerTrainer \(or MutualLossMixin"):
        Run(registry, tmp_path, resume=uninterrupted.out / "checkpoint-8", trainer_cls=transformers.Trainer)
