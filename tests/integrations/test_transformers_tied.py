"""The Hugging Face Trainer with a tied GPT-2 (``lm_head`` is the token embedding): its checkpoints
(``save_pretrained``) hold the compressed tied weight once, and a run resumed from one ends equal
to the uninterrupted run."""

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
from safetensors.torch import load_file  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

import squeezer  # noqa: E402
from squeezer import compress  # noqa: E402
from squeezer.compress.targets import Targets  # noqa: E402
from squeezer.integrations.transformers import SqueezerTrainer, SqueezerTrainerCallback  # noqa: E402
from squeezer.session import Compression  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
REGISTRY = squeezer.load_registry(autoload=False)


class Counting(Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        start, stride = torch.randint(0, 16, (32, 1), generator=g), torch.randint(1, 3, (32, 1), generator=g)
        self.ids = (start + stride * torch.arange(10)) % 16

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class SaveAt(transformers.TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        control.should_save = state.global_step == self.step


def train(out: Path, resume: Path | None = None) -> Any:
    config = transformers.GPT2Config(vocab_size=16, n_positions=10, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    comp = Compression(model, targets=Targets(types=("Linear", "Conv1D")), importance="l1",
                       schedule=("geometric", {"target": 0.5, "rounds": 2}), quantizer=("lsq", {"bits": 4}),
                       prune_start=2, prune_every=2, registry=REGISTRY)
    callback = SqueezerTrainerCallback(comp, mutual=False, export=out / "model.safetensors")
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=4, per_device_train_batch_size=16, learning_rate=5e-3,
        save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True, seed=0)
    trainer = SqueezerTrainer(model=model, args=args, train_dataset=Counting(), callbacks=[callback, SaveAt(5)])
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    return model


def test_checkpoints_hold_the_tied_weight_once_and_resume(tmp_path: Path) -> None:
    full = train(tmp_path / "full")
    assert compress.weight_aliases(full) == {"transformer.wte.weight": ("lm_head.weight",)}
    checkpoint = tmp_path / "full" / "checkpoint-5"
    saved = load_file(checkpoint / "model.safetensors")
    assert "transformer.wte.parametrizations.weight.0.mask" in saved
    assert not any(k.startswith("lm_head.") for k in saved)  # stored once, under the first path
    resumed = train(tmp_path / "resumed", resume=checkpoint)
    state, expected = resumed.state_dict(), full.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    loaded = squeezer.load(tmp_path / "resumed" / "model.safetensors", transformers.GPT2LMHeadModel(full.config))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
