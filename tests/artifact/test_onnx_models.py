"""ONNX export of real architectures: every benchmark-suite model and Hugging Face BERT, GPT-2 and
Whisper built from tiny configs (random weights, nothing downloaded), pruned and 4-bit quantized,
export and verify in onnxruntime. The digits CNN and BERT run in the default suite; the rest are
marked slow (a few seconds to half a minute each)."""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import squeezer
import squeezer.compress as sc
from squeezer.compress.targets import Targets

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from squeezer.artifact.onnx_export import export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.suite import MEMBERS  # noqa: E402

REGISTRY = squeezer.load_registry(autoload=False)
FAST_MEMBERS = {"digits_cnn"}


def compress(model: nn.Module, exclude: tuple[str, ...] = ()) -> nn.Module:
    sc.attach(model, Targets(exclude=exclude))
    sc.prune(model, lambda p, w: w.abs(), 0.7)
    sc.attach_quantizers(model, lambda p: ("lsq", REGISTRY.create("quantizer", "lsq", {"bits": 4})))
    return model.eval()


def check(model: nn.Module, example: Any, target: Path) -> None:
    report = export_onnx(model, target, example)
    quantized = len(list(sc.compressed_weights(model)))
    assert report.quantized == quantized > 0 and report.int4 == quantized
    assert report.max_abs_diff <= 1e-4 and report.argmax_rows > 0
    nodes = Counter(n.op_type for n in onnx.load(str(target)).graph.node)
    assert nodes["DequantizeLinear"] == quantized


@pytest.mark.parametrize("member", [pytest.param(m, id=m.name, marks=() if m.name in FAST_MEMBERS
                                                 else pytest.mark.slow) for m in MEMBERS])
def test_suite_models_export_and_verify(member: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = compress(member.build_model())
    x = next(iter(member.loaders(batch_size=8, subset=16)[1]))[0][:8]
    check(model, x, tmp_path / "model.onnx")


def _bert() -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    import transformers as tf

    config = tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, num_labels=3)
    ids = torch.randint(0, 100, (2, 12))
    return tf.BertForSequenceClassification(config), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ()


def _gpt2_config() -> Any:
    import transformers as tf

    return tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=3,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1, use_cache=False)


def _gpt2_classifier() -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    import transformers as tf

    ids = torch.randint(1, 100, (2, 12))
    return (tf.GPT2ForSequenceClassification(_gpt2_config()),
            {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ())


def _gpt2_lm() -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    import transformers as tf

    # lm_head shares the token embedding: the tied table is compressed once, and exported once
    return tf.GPT2LMHeadModel(_gpt2_config()), {"input_ids": torch.randint(1, 100, (2, 12))}, ()


def _whisper_config() -> Any:
    import transformers as tf

    return tf.WhisperConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=20, max_target_positions=20,
                            num_labels=3, pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=1)


def _whisper_classifier() -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    import transformers as tf

    return tf.WhisperForAudioClassification(_whisper_config()), {"input_features": torch.randn(2, 16, 40)}, ()


def _whisper_encoder() -> tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]:
    import transformers as tf

    encoder = tf.WhisperForAudioClassification(_whisper_config()).encoder
    return encoder, {"input_features": torch.randn(2, 16, 40)}, ()


HF: dict[str, Callable[[], tuple[nn.Module, dict[str, torch.Tensor], tuple[str, ...]]]] = {
    "bert": _bert, "gpt2_classifier": _gpt2_classifier, "gpt2_lm": _gpt2_lm,
    "whisper_classifier": _whisper_classifier, "whisper_encoder": _whisper_encoder,
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "bert" else pytest.mark.slow) for n in HF])
def test_hugging_face_models_export_and_verify(name: str, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, example, exclude = HF[name]()
    check(compress(model.eval(), exclude), example, tmp_path / "model.onnx")
