"""Keyword spotting on synthetic, generated-in-code speech-command-like data, and a DS-CNN for it.

The data imitates the 12-class Speech Commands task (10 keywords, ``_silence_``, ``_unknown_``)
as log-mel-like features of shape ``(1, FRAMES, BINS)`` = ``(1, 40, 32)``. It is *not* speech:
every "word" is a sequence of 2-4 segments (vowel-like formant bands, formant glides, fricative
noise bands, plosive bursts) drawn from a fixed phone inventory, so that words share segments and
some unknown words differ from a keyword by a single segment. Each utterance varies the way
recordings do: the speaker's formant scaling and shift, spectral tilt and speaking rate, per-
utterance time shift, segment durations, formant targets and loudness, and background noise
(coloured, fluctuating, sometimes with a second word as babble) at a random SNR. ``_silence_`` is
background noise alone.

Everything is generated from seeded ``torch.Generator`` objects, vectorized (a few thousand
utterances take about a second on one CPU core), and nothing is cached on disk. The phone inventory and the
lexicon are fixed (the "language" does not depend on the seed); the speakers and utterances of a
split come from ``(seed, split)``, so training and validation speakers never coincide and
validation accuracy measures generalization to new speakers.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import attrs
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FRAMES = 40  # time steps (frames of about 25 ms: one second)
BINS = 32  # log-mel-like frequency bins
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LABELS = (*KEYWORDS, "_silence_", "_unknown_")
SILENCE, UNKNOWN = LABELS.index("_silence_"), LABELS.index("_unknown_")
NUM_CLASSES = len(LABELS)
UNKNOWN_WORDS = 20  # the non-keyword vocabulary that ``_unknown_`` utterances draw from
UTTERANCES_PER_SPEAKER = 8
SPLITS = {"train": 0, "val": 1}

_LEXICON_SEED = 2021  # fixed: the phone inventory and the words do not depend on the data seed
_SEGMENTS = 4  # at most this many segments per word
_FORMANTS = 3
_FRAMES_PER_UNIT = 5.0  # frames of a segment of duration weight 1 at speaking rate 1
_LOG_MEAN, _LOG_STD = -4.3, 2.5  # fixed feature normalization (roughly zero mean, unit variance)

Split = Literal["train", "val"]


@attrs.frozen(kw_only=True)
class Nuisance:
    """How much utterances vary (the defaults are the bundled task's; ranges are uniform)."""

    snr_db: tuple[float, float] = attrs.field(default=(-5.0, 20.0), converter=tuple)
    gain_db: float = 10.0  # loudness, +- this
    formant_warp: tuple[float, float] = attrs.field(default=(0.85, 1.18), converter=tuple)  # per speaker
    formant_shift: float = 1.5  # bins, +- this, per speaker
    spectral_tilt: float = 0.6  # per speaker, +- this (log power from the lowest to the highest bin / 2)
    speaking_rate: tuple[float, float] = attrs.field(default=(0.8, 1.25), converter=tuple)  # per speaker
    rate_jitter: float = 0.1  # per utterance, +- this fraction
    duration_jitter: tuple[float, float] = attrs.field(default=(0.75, 1.3), converter=tuple)  # per segment
    formant_jitter: float = 0.8  # bins (standard deviation), per segment and formant
    babble: float = 0.3  # probability of a second, quieter word in the background
    babble_db: tuple[float, float] = attrs.field(default=(-18.0, -8.0), converter=tuple)


class Lexicon(NamedTuple):
    """Word templates, ``W`` words x ``_SEGMENTS`` segments (absent segments have duration 0).

    Words ``0..9`` are the keywords, ``10..`` the unknown words.
    """

    duration: torch.Tensor  # (W, S) duration weights
    formant_start: torch.Tensor  # (W, S, K) formant centres (bins) at the start of the segment
    formant_end: torch.Tensor  # (W, S, K) ... and at its end (glides move, vowels barely)
    formant_amp: torch.Tensor  # (W, S, K)
    noise_centre: torch.Tensor  # (W, S) frication / burst noise band
    noise_width: torch.Tensor  # (W, S)
    noise_amp: torch.Tensor  # (W, S)


class Utterances(NamedTuple):
    """A generated split: features ``x`` (N, 1, FRAMES, BINS) float32, labels ``y`` (N,) int64 (indices
    into :data:`LABELS`), and ``speaker`` (N,) int64, an id unique across seeds and splits."""

    x: torch.Tensor
    y: torch.Tensor
    speaker: torch.Tensor


def _phones(g: torch.Generator) -> dict[str, torch.Tensor]:
    """The phone inventory: 8 vowels, 4 glides (moving formants), 4 fricatives, 3 bursts."""
    vowels, glides, fricatives, bursts = 8, 4, 4, 3
    n = vowels + glides + fricatives + bursts

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    # formants: F1 low, F2 middle, F3 high (bins); vowels spread over the F1/F2 plane
    lo = torch.tensor([2.0, 9.0, 19.0])
    hi = torch.tensor([9.0, 19.0, 27.0])
    start = lo + (hi - lo) * torch.rand(n, _FORMANTS, generator=g)
    end = start.clone()
    v, gl = slice(0, vowels), slice(vowels, vowels + glides)
    end[v] = start[v] + u(-1.0, 1.0, vowels, _FORMANTS)  # slight drift
    end[gl] = lo + (hi - lo) * torch.rand(glides, _FORMANTS, generator=g)  # a chirp to other targets
    amp = torch.zeros(n, _FORMANTS)
    amp[: vowels + glides] = torch.tensor([1.0, 0.7, 0.35]) * u(0.8, 1.2, vowels + glides, _FORMANTS)
    duration = torch.cat([u(1.2, 1.8, vowels), u(1.0, 1.5, glides), u(0.7, 1.1, fricatives), u(0.3, 0.5, bursts)])
    f, b = slice(vowels + glides, n - bursts), slice(n - bursts, n)
    noise_centre, noise_width, noise_amp = torch.zeros(n), torch.ones(n), torch.zeros(n)
    noise_centre[f], noise_width[f], noise_amp[f] = u(17.0, 29.0, fricatives), u(2.0, 5.0, fricatives), 0.35
    noise_centre[b], noise_width[b], noise_amp[b] = u(6.0, 20.0, bursts), u(8.0, 14.0, bursts), 0.8
    return {"duration": duration, "formant_start": start, "formant_end": end, "formant_amp": amp,
            "noise_centre": noise_centre, "noise_width": noise_width, "noise_amp": noise_amp,
            "kind": torch.tensor([0] * (vowels + glides) + [1] * fricatives + [2] * bursts)}


def lexicon() -> Lexicon:
    """The fixed words: keywords, then unknown words (each: optional onset consonant, one or two
    vowels/glides, optional coda consonant). About a third of the unknown words are a keyword with
    one segment replaced (minimal pairs), the rest are new combinations of the same phones."""
    g = torch.Generator().manual_seed(_LEXICON_SEED)
    phones = _phones(g)
    kind = phones["kind"]
    nuclei = torch.nonzero(kind == 0).flatten()
    consonants = torch.nonzero(kind > 0).flatten()

    def pick(pool: torch.Tensor) -> int:
        return int(pool[int(torch.randint(len(pool), (1,), generator=g))])

    def new_word() -> tuple[int, ...]:
        word: list[int] = []
        if torch.rand(1, generator=g) < 0.7:
            word.append(pick(consonants))
        word.append(pick(nuclei))
        if torch.rand(1, generator=g) < 0.35:
            word.append(pick(nuclei))
        if torch.rand(1, generator=g) < 0.6 or len(word) == 1:
            word.append(pick(consonants))
        return tuple(word)

    words: list[tuple[int, ...]] = []
    while len(words) < len(KEYWORDS):
        w = new_word()
        if w not in words:
            words.append(w)
    while len(words) < len(KEYWORDS) + UNKNOWN_WORDS:
        if torch.rand(1, generator=g) < 0.35:  # a keyword with one segment replaced
            base = list(words[int(torch.randint(len(KEYWORDS), (1,), generator=g))])
            i = int(torch.randint(len(base), (1,), generator=g))
            base[i] = pick(nuclei if kind[base[i]] == 0 else consonants)
            w = tuple(base)
        else:
            w = new_word()
        if w not in words:
            words.append(w)
    index = torch.full((len(words), _SEGMENTS), -1, dtype=torch.long)
    for i, w in enumerate(words):
        index[i, : len(w)] = torch.tensor(w)
    present = index >= 0
    safe = index.clamp(min=0)

    def take(name: str) -> torch.Tensor:
        t = phones[name][safe]
        mask = present.reshape(*present.shape, *([1] * (t.dim() - 2)))
        return torch.where(mask, t, torch.zeros(()))

    return Lexicon(take("duration"), take("formant_start"), take("formant_end"), take("formant_amp"),
                   take("noise_centre"), take("noise_width").clamp(min=1.0), take("noise_amp"))


def _render(lex: Lexicon, word: torch.Tensor, g: torch.Generator, rate: torch.Tensor, warp: torch.Tensor,
            shift: torch.Tensor, nuisance: Nuisance) -> torch.Tensor:
    """Power spectrogram ``(N, FRAMES, BINS)`` of ``word`` (index into the lexicon) per utterance,
    with speaker ``rate`` (duration multiplier), formant ``warp`` (scale) and ``shift`` (bins)."""
    n = len(word)
    t = torch.arange(FRAMES, dtype=torch.float32).view(1, FRAMES, 1)
    f = torch.arange(BINS, dtype=torch.float32).view(1, 1, BINS)
    dur = lex.duration[word] * torch.empty(n, _SEGMENTS).uniform_(*nuisance.duration_jitter, generator=g)
    dur = dur * rate.view(n, 1) * _FRAMES_PER_UNIT
    length = dur.sum(1)
    onset = torch.rand(n, generator=g) * (FRAMES - length + 4.0).clamp(min=0.0) - 2.0
    ends = onset.view(n, 1) + dur.cumsum(1)
    starts = ends - dur
    jitter = torch.randn(n, _SEGMENTS, _FORMANTS, 2, generator=g) * nuisance.formant_jitter
    amp_jitter = torch.exp(torch.randn(n, _SEGMENTS, _FORMANTS, generator=g) * 0.25)
    texture = _gamma(n, 2, g)  # the graininess of frication and bursts
    power = torch.zeros(n, FRAMES, BINS)
    for s in range(_SEGMENTS):
        if not bool((dur[:, s] > 0).any()):
            continue
        on, off = starts[:, s].view(n, 1, 1), ends[:, s].view(n, 1, 1)
        live = (dur[:, s] > 0).float().view(n, 1, 1)
        env = torch.sigmoid((t - on) / 0.6) * torch.sigmoid((off - t) / 0.6) * live  # (n, T, 1)
        progress = ((t - on) / (off - on).clamp(min=1e-3)).clamp(0.0, 1.0)
        segment = torch.zeros(n, FRAMES, BINS)
        for k in range(_FORMANTS):
            a = lex.formant_start[word, s, k] + jitter[:, s, k, 0]
            b = lex.formant_end[word, s, k] + jitter[:, s, k, 1]
            centre = (a.view(n, 1, 1) + (b - a).view(n, 1, 1) * progress) * warp.view(n, 1, 1) + shift.view(n, 1, 1)
            amp = (lex.formant_amp[word, s, k] * amp_jitter[:, s, k]).view(n, 1, 1)
            segment += _bump(f, centre, 1.2 + 0.25 * k).mul_(amp)
        centre = (lex.noise_centre[word, s] * warp + shift).view(n, 1, 1)
        band = _bump(f, centre, lex.noise_width[word, s].view(n, 1, 1))
        segment.addcmul_(band * lex.noise_amp[word, s].view(n, 1, 1), texture)
        power.addcmul_(segment, env)
    return power


def _noise(n: int, g: torch.Generator) -> torch.Tensor:
    """Background noise power ``(N, FRAMES, BINS)`` with unit mean: random spectral tilt and hum-like
    bumps, slow loudness fluctuation, and the graininess of a short-time spectrum."""
    f = torch.linspace(-1.0, 1.0, BINS).view(1, 1, BINS)
    t = torch.linspace(0.0, 1.0, FRAMES).view(1, FRAMES, 1)
    tilt = torch.empty(n, 1, 1).uniform_(-2.5, 1.0, generator=g)
    bump_at = torch.empty(n, 1, 1).uniform_(-1.0, 1.0, generator=g)
    bump = torch.empty(n, 1, 1).uniform_(0.0, 3.0, generator=g) * torch.exp(-0.5 * ((f - bump_at) / 0.1) ** 2)
    shape = torch.exp(tilt * f) + bump
    freq = torch.empty(n, 1, 1).uniform_(0.5, 4.0, generator=g)
    phase = torch.empty(n, 1, 1).uniform_(0.0, 2 * math.pi, generator=g)
    depth = torch.empty(n, 1, 1).uniform_(0.0, 0.8, generator=g)
    wobble = 1.0 + depth * torch.sin(2 * math.pi * freq * t + phase)
    power = shape * wobble * _gamma(n, 4, g)
    return power / power.mean(dim=(1, 2), keepdim=True)


def _gamma(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Gamma(k, k) samples of shape ``(n, FRAMES, BINS)`` (mean 1), drawn from ``g``: the mean of
    ``k`` unit exponentials, ``-log`` of a product of uniforms (faster than ``exponential_``)."""
    u = torch.rand(n, FRAMES, BINS, generator=g)
    for _ in range(k - 1):
        u.mul_(torch.rand(n, FRAMES, BINS, generator=g))
    return u.clamp_(min=1e-30).log_().mul_(-1.0 / k)


def _bump(f: torch.Tensor, centre: torch.Tensor, width: float | torch.Tensor) -> torch.Tensor:
    """``exp(-((f - centre) / width)^2 / 2)``, broadcast, computed in place where possible."""
    z = (f - centre) / width
    return z.square_().mul_(-0.5).exp_()


def generate(n: int, seed: int = 0, split: Split = "train", nuisance: Nuisance | None = None) -> Utterances:
    """``n`` utterances of ``split`` (``"train"`` or ``"val"``), balanced over the 12 classes.

    Deterministic in ``(n, seed, split)``; different splits (or seeds) have different speakers.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    nu = nuisance or Nuisance()
    stream = seed * len(SPLITS) + SPLITS[split]
    g = torch.Generator().manual_seed(0x5EED_0000 + stream)
    lex = lexicon()
    y = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    word = y.clone()
    unknown = y == UNKNOWN
    word[unknown] = len(KEYWORDS) + torch.randint(UNKNOWN_WORDS, (int(unknown.sum()),), generator=g)
    word[y == SILENCE] = 0  # rendered, then silenced
    # speakers: every split has its own; a speaker says about UTTERANCES_PER_SPEAKER utterances
    speakers = max(1, n // UTTERANCES_PER_SPEAKER)
    local = torch.randint(speakers, (n,), generator=g)
    speaker = stream * 1_000_000 + local
    warp = _log_uniform(speakers, nu.formant_warp, g)[local]
    shift = torch.empty(speakers).uniform_(-nu.formant_shift, nu.formant_shift, generator=g)[local]
    rate = _log_uniform(speakers, nu.speaking_rate, g)[local]
    rate = rate * torch.empty(n).uniform_(1 - nu.rate_jitter, 1 + nu.rate_jitter, generator=g)
    spk_tilt = torch.empty(speakers).uniform_(-nu.spectral_tilt, nu.spectral_tilt, generator=g)[local]

    speech = _render(lex, word, g, rate, warp, shift, nu)
    speech = speech * torch.exp(spk_tilt.view(n, 1, 1) * torch.linspace(-1.0, 1.0, BINS).view(1, 1, BINS))
    speech = speech * (y != SILENCE).float().view(n, 1, 1)
    # babble: another word, quieter, at its own position, in some utterances
    babbling = torch.nonzero(torch.rand(n, generator=g) < nu.babble).flatten()
    m = len(babbling)
    other = torch.randint(len(KEYWORDS) + UNKNOWN_WORDS, (m,), generator=g)
    babble_db = torch.empty(m).uniform_(*nu.babble_db, generator=g)
    babble = torch.zeros(n, FRAMES, BINS)
    if m:
        babble[babbling] = _render(lex, other, g, torch.ones(m), torch.ones(m), torch.zeros(m), nu) * (
            10 ** (babble_db / 10)).view(m, 1, 1)
    level = speech.mean(dim=(1, 2)).clamp(min=1e-3)
    level = torch.where(y == SILENCE, torch.full_like(level, 0.075), level)
    gain = 10 ** (torch.empty(n).uniform_(-nu.gain_db, nu.gain_db, generator=g) / 10)
    snr = torch.empty(n).uniform_(*nu.snr_db, generator=g)
    noise = _noise(n, g) * (level / 10 ** (snr / 10)).view(n, 1, 1)
    noise = noise + babble
    power = (speech + noise) * gain.view(n, 1, 1)
    x = (torch.log(power + 1e-6) - _LOG_MEAN) / _LOG_STD
    return Utterances(x.unsqueeze(1).float(), y, speaker)


def _log_uniform(n: int, bounds: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    return torch.exp(torch.empty(n).uniform_(math.log(bounds[0]), math.log(bounds[1]), generator=g))


def make_datasets(
    n_train: int = 4800, n_val: int = 1200, seed: int = 0, nuisance: Nuisance | dict[str, Any] | None = None
) -> tuple[TensorDataset, TensorDataset]:
    """Training and validation splits as tensor datasets (disjoint speakers)."""
    if isinstance(nuisance, dict):
        nuisance = Nuisance(**nuisance)
    train, val = generate(n_train, seed, "train", nuisance), generate(n_val, seed, "val", nuisance)
    return TensorDataset(train.x, train.y), TensorDataset(val.x, val.y)


def make_loaders(
    batch_size: int = 64,
    n_train: int = 4800,
    n_val: int = 1200,
    seed: int = 0,
    nuisance: Nuisance | dict[str, Any] | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Training loader (shuffled from torch's global RNG, which the pipeline seeds) and validation loader.

    ``seed`` selects the generated data (speakers and utterances), not the training run's seed.
    ``nuisance`` changes how much utterances vary (a :class:`Nuisance` or, from a recipe, a table of
    its fields, e.g. ``nuisance = { snr_db = [10.0, 30.0] }`` for cleaner audio).
    """
    train, val = make_datasets(n_train, n_val, seed, nuisance)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(val, batch_size=256, shuffle=False),
    )


def _separable(channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (one filter per channel) + BN + ReLU, then pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
    )


class DSCNN(nn.Module):
    """``(N, 1, FRAMES, BINS)`` (or ``(N, FRAMES, BINS)``) features -> ``(N, num_classes)`` logits."""

    def __init__(self, width: int, blocks: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, (5, 5), stride=2, padding=2, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(*(_separable(width, 2 if i == 1 else 1) for i in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        h = self.blocks(self.stem(x)).mean(dim=(2, 3))
        out: torch.Tensor = self.head(h)
        return out


def make_model(width: int = 64, blocks: int = 4, num_classes: int = NUM_CLASSES) -> nn.Module:
    """A DS-CNN (Zhang et al., "Hello Edge", 2017) for ``(1, 40, 32)`` features: a 5x5 stride-2
    convolution, ``blocks`` depthwise-separable blocks (the second with stride 2), global average
    pooling and a linear head. At the default width 64 and 4 blocks (the layout of Hello Edge's small
    DS-CNN) it has 21,056 weights, 78 % of them in the pointwise convolutions.
    """
    if width < 1 or blocks < 1:
        raise ValueError(f"width and blocks must be positive, got width={width}, blocks={blocks}")
    return DSCNN(width, blocks, num_classes)
