"""squeezer.integrations.transformers: the callback in a real (tiny, CPU, offline) HF Trainer run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the HF Trainer needs it

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import squeezer  # noqa: E402
from squeezer.compress.targets import Targets  # noqa: E402
from squeezer.compress.weight import compressed_weights  # noqa: E402
from squeezer.integrations.transformers import SqueezerTrainerCallback  # noqa: E402
from squeezer.recipe import parse_recipe  # noqa: E402
from squeezer.registry import Registry  # noqa: E402
from squeezer.session import Compression  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return squeezer.load_registry(autoload=False)


def tiny_bert() -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


class Tokens(Dataset):
    """Random token sequences; the label says whether token 7 occurs."""

    def __init__(self, n: int = 32, length: int = 12) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, length), generator=g)
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _args(out: Path, **kwargs: object) -> Any:
    defaults: dict[str, object] = dict(
        output_dir=str(out), per_device_train_batch_size=16, learning_rate=5e-3, save_strategy="no",
        report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
        num_train_epochs=3,
    )
    defaults.update(kwargs)
    return transformers.TrainingArguments(**defaults)


def test_prunes_quantizes_exports_and_reloads(registry: Registry, tmp_path: Path) -> None:
    model = tiny_bert()
    comp = Compression(model, targets=Targets(types=("Linear",)), importance="l1",
                       schedule=("geometric", {"target": 0.75, "rounds": 3}), quantizer=("lsq", {"bits": 4}),
                       prune_every=2, min_density=0.0, registry=registry)
    path = tmp_path / "bert.safetensors"
    callback = SqueezerTrainerCallback(comp, export=path)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path / "run"), train_dataset=Tokens(),
                                   callbacks=[callback])
    assert len(list(compressed_weights(model))) == 2 * 6 + 2  # masks before the optimizer exists
    trainer.train()  # 2 steps per epoch, 6 steps: rounds after steps 2, 4, 6
    assert comp.done and comp.steps == 6
    assert comp.sparsity == pytest.approx(0.75, abs=0.01)
    assert set(comp.bits.values()) == {4} and len(comp.bits) == 14
    optimizer = trainer.optimizer
    assert optimizer is not None
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in model.parameters() if p.requires_grad)
    # the LR scheduler drives the quantizers' group too (linear decay to 0 at the last step)
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-9) for g in optimizer.param_groups)

    fresh = squeezer.load(path, tiny_bert())
    model.eval()
    fresh.eval()
    ids = Tokens().ids
    with torch.no_grad():
        expected, got = model(input_ids=ids).logits, fresh(input_ids=ids).logits
    assert torch.allclose(expected, got, rtol=1e-5, atol=1e-5)
    assert torch.equal(expected.argmax(-1), got.argmax(-1))


def test_recipe_prunes_once_per_epochs_per_round(registry: Registry, tmp_path: Path) -> None:
    recipe = parse_recipe("""
[model]
factory = "unused:unused"
[data]
factory = "unused:unused"
[targets]
types = ["Linear"]
exclude = ["classifier"]
[[stages]]
type = "prune"
scheduler = { name = "geometric", target = 0.5, rounds = 2 }
epochs_per_round = 1
min_density = 0.0
""", registry=registry)
    model = tiny_bert()
    callback = SqueezerTrainerCallback(recipe, module="bert", registry=registry)
    args = _args(tmp_path / "run", num_train_epochs=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[callback])
    trainer.train()
    comp = callback.compression
    assert comp.prune_every == 2 and comp.rounds_done == 2 and comp.bits == {}
    assert comp.sparsity == pytest.approx(0.5, abs=0.01)
    assert all(not path.startswith("classifier") for path, _ in compressed_weights(model))
    head = model.get_parameter("classifier.weight")
    assert head.count_nonzero() == head.numel()


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/integrations.md's transformers block (skipped by the docs test, which lacks transformers)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text(encoding="utf-8")
    code = next(b.split("```", 1)[0] for b in text.split("```python\n")[1:] if "import transformers" in b)
    exec(compile(code, "integrations.md (transformers)", "exec"), {"__name__": "__docs__"})


class _Snapshot(TrainerCallback):
    """Masks and stored weights when Phase 2 starts, and the kd weight of each epoch."""

    def __init__(self, sq: SqueezerTrainerCallback) -> None:
        self.sq = sq
        self.at_start: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.kd_weights: list[float] = []

        self.stale_teacher_grads = 0  # Phase 2 steps that began with gradients left from the last one
        self.phase2_steps = 0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.sq.teacher is not None:
            self.phase2_steps += 1
            self.stale_teacher_grads += any(p.grad is not None for p in self.sq.teacher.parameters())

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.kd_weights.append(self.sq.kd_weight)
        if self.sq.teacher is not None and self.at_start is None:
            model = self.sq.compression.model
            self.at_start = {path: (p.mask.clone(), squeezer.compress.original(model, path).detach().clone())
                             for path, p in compressed_weights(model)}


def test_phase2_mutual_learning(registry: Registry, tmp_path: Path) -> None:
    from squeezer.integrations.transformers import SqueezerTrainer

    model = tiny_bert()
    comp = Compression(model, targets=Targets(types=("Linear",), exclude=("classifier",)), importance="l1",
                       schedule=("geometric", {"target": 0.75, "rounds": 2}), quantizer=("lsq", {"bits": 4}),
                       prune_every=2, min_density=0.0, registry=registry)
    path = tmp_path / "bert.safetensors"
    callback = SqueezerTrainerCallback(comp, mutual=True, export=path)
    snapshot = _Snapshot(callback)
    trainer = SqueezerTrainer(model=model, args=_args(tmp_path / "run", num_train_epochs=4),
                              train_dataset=Tokens(), callbacks=[callback, snapshot])
    assert trainer._squeezer_callback() is callback
    trainer.train()  # epochs 0-1: rounds after steps 2 and 4; 2: Phase 2 warm-up; 3: mutual KD
    teacher = callback.teacher
    assert teacher is not None and comp.done and comp.steps == 8
    assert snapshot.kd_weights == [0.0, 0.0, 0.0, 1.0]
    # the Trainer zeroes only the model's gradients; the callback clears the teacher's own copies
    assert snapshot.phase2_steps == 4 and snapshot.stale_teacher_grads == 0
    assert comp.sparsity == pytest.approx(0.75, abs=0.01)
    # the teacher's own norm copies (and everything else trainable) are in the optimizer
    optimizer = trainer.optimizer
    assert optimizer is not None
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    teacher_params = [p for p in teacher.parameters() if p.requires_grad]
    assert teacher_params and all(id(p) in in_optimizer for p in teacher_params)
    assert all(id(p) in in_optimizer for p in model.parameters() if p.requires_grad)
    assert any("LayerNorm" in key for key in teacher.params)  # the teacher's own norm copies
    assert snapshot.at_start is not None
    changed_pruned = 0
    for wpath, p in compressed_weights(model):
        mask0, stored0 = snapshot.at_start[wpath]
        assert torch.equal(p.mask, mask0)  # masks frozen in Phase 2
        stored = squeezer.compress.original(model, wpath).detach()
        changed_pruned += int((stored[~mask0] != stored0[~mask0]).sum())
        student = cast(torch.Tensor, model.get_submodule(wpath.rsplit(".", 1)[0]).weight)  # the student's view
        assert torch.all(student[~mask0] == 0)  # pruned entries exactly 0
    assert changed_pruned > 0  # the teacher trained the pruned-away entries

    fresh = squeezer.load(path, tiny_bert())
    model.eval()
    fresh.eval()
    ids = Tokens().ids
    with torch.no_grad():
        expected, got = model(input_ids=ids).logits, fresh(input_ids=ids).logits
    assert torch.allclose(expected, got, rtol=1e-5, atol=1e-5)
    assert torch.equal(expected.argmax(-1), got.argmax(-1))
