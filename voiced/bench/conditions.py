"""Acoustic conditions for `voiced bench accuracy`: rooms, noise, a quiet speaker, clipping.

A condition is named by its parts joined with `+`, applied in this order:

* `clean`: the synthesized speech as it is (level-normalized, padded with silence);
* `reverb-small|medium|large`: convolution with a synthetic room impulse response
  (exponentially decaying noise after the direct sound; reverberation time and
  direct-to-reverberant ratio per room in `ROOMS`);
* `quiet`: the speaker 25 dB below the normal level (`quiet-N`: N dB below);
* `white|brown|babble|tv-SNR`: noise mixed in at SNR dB. White and brown (1/f², a fan or
  a fridge) are stationary; babble is several other voices talking at once; tv is one
  other voice over synthetic music (chords, bass and drums). The SNR is measured over the
  speech (from its first to its last active 20 ms frame), after reverberation;
* `clip`: 20 dB of gain into a hard limit at full scale (an overdriven microphone input;
  `clip-N`: N dB).

Everything is numpy (scipy for filters): deterministic for a given random generator, no
external program. Signals are float arrays at SAMPLE_RATE with 1.0 = full scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voiced.const import SAMPLE_RATE

VERSION = 1
"""Part of the cache key of conditioned audio: bump when the rendering changes."""
SPEECH_DBFS = -26.0
"""RMS level of the active speech in every condition but `quiet` and `clip`."""
LEAD_S = 0.5
"""Silence (or noise) before the speech."""
TAIL_S = 1.0
"""Silence (or noise) after it: enough for the 500 ms endpoint of the default VAD."""
QUIET_DB = 25.0
CLIP_DB = 20.0
MUSIC_UNDER_TALKER_DB = 8.0
"""tv: the music is this far below the talker."""
BABBLE_TALKERS = 5
_FRAME = SAMPLE_RATE // 50
_ACTIVE_BELOW_PEAK_DB = 40.0


@dataclass(frozen=True, slots=True)
class Room:
    """A room's reverberation."""

    name: str
    rt60_s: float
    """Reverberation time: seconds for the reverberant sound to fall by 60 dB."""
    drr_db: float
    """Direct-to-reverberant energy ratio (dB): lower is a farther microphone."""


ROOMS: dict[str, Room] = {
    "small": Room("small", 0.3, 8.0),
    "medium": Room("medium", 0.6, 2.0),
    "large": Room("large", 1.0, -3.0),
}
NOISES = ("white", "brown", "babble", "tv")
TALKER_NOISES = frozenset({"babble", "tv"})
"""Noises made of other voices' speech (the caller provides it)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """How the speech reaches the microphone."""

    name: str
    room: Room | None = None
    noise: str | None = None
    snr_db: float = 0.0
    """Speech-to-noise ratio (dB) when `noise` is set."""
    gain_db: float = 0.0
    """Level change of the speaker (negative: quieter), before the noise."""
    clip_db: float | None = None
    """Gain into the full-scale limit (None: no clipping)."""

    @property
    def needs_talkers(self) -> bool:
        """True when the noise is made of other voices (babble, tv)."""
        return self.noise in TALKER_NOISES


DEFAULT_CONDITIONS: tuple[str, ...] = (
    "clean",
    "reverb-small", "reverb-medium", "reverb-large",
    *(f"{noise}-{snr}" for noise in NOISES for snr in (20, 15, 10)),
    "reverb-medium+brown-15", "reverb-medium+babble-15",
    "quiet", "clip",
)
"""Every condition of a full run: clean, three rooms, four noises at 20/15/10 dB, two
far-field mixes (a room and 15 dB of noise, what a kitchen satellite hears), a quiet
speaker and clipping."""


def parse_condition(name: str) -> Condition:
    """The condition a name describes; raises ValueError naming the bad part."""
    room: Room | None = None
    noise: str | None = None
    snr = gain = 0.0
    clip: float | None = None
    parts = name.strip().lower().split("+")
    if parts == ["clean"]:
        return Condition("clean")
    for part in parts:
        kind, _, arg = part.partition("-")
        try:
            if kind == "reverb" and arg in ROOMS and room is None:
                room = ROOMS[arg]
            elif kind in NOISES and arg and noise is None:
                noise, snr = kind, float(arg)
            elif kind == "quiet" and gain == 0.0:
                gain = -(float(arg) if arg else QUIET_DB)
            elif kind == "clip" and clip is None:
                clip = float(arg) if arg else CLIP_DB
            else:
                raise ValueError(part)
        except ValueError:
            raise ValueError(
                f"unknown condition part {part!r} in {name!r}: expected clean, "
                f"reverb-{'|'.join(ROOMS)}, {'|'.join(NOISES)}-SNR, quiet[-DB], clip[-DB] "
                "(joined with +)") from None
    return Condition("+".join(parts), room, noise, snr, gain, clip)


def rms(x: np.ndarray) -> float:
    """Root mean square (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def db(ratio: float) -> float:
    """An amplitude ratio in dB."""
    return 20 * float(np.log10(max(ratio, 1e-12)))


def active_span(x: np.ndarray) -> tuple[int, int]:
    """(start, end) samples from the first to the last 20 ms frame within 40 dB of the
    loudest frame: where the speech is."""
    frames = len(x) // _FRAME
    if frames == 0:
        return 0, len(x)
    levels = np.sqrt(np.mean(np.square(x[: frames * _FRAME].reshape(frames, _FRAME)), axis=1))
    loud = np.flatnonzero(levels >= levels.max() * 10 ** (-_ACTIVE_BELOW_PEAK_DB / 20))
    if not len(loud) or levels.max() == 0:
        return 0, len(x)
    return int(loud[0] * _FRAME), int((loud[-1] + 1) * _FRAME)


def prepare(speech: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The dry speech trimmed, at SPEECH_DBFS, padded by LEAD_S and TAIL_S; and where the
    speech is in it."""
    start, end = active_span(speech)
    core = speech[start:end].astype(np.float64)
    level = rms(core)
    if level > 0:
        core *= 10 ** (SPEECH_DBFS / 20) / level
    lead, tail = int(LEAD_S * SAMPLE_RATE), int(TAIL_S * SAMPLE_RATE)
    return np.concatenate([np.zeros(lead), core, np.zeros(tail)]), (lead, lead + len(core))


def room_impulse(room: Room, rng: np.random.Generator) -> np.ndarray:
    """A synthetic impulse response: the direct sound (1.0), a few early reflections and
    a diffuse tail decaying 60 dB in `rt60_s`, whose energy is `drr_db` below the direct
    sound's."""
    from scipy.signal import lfilter

    n = int(room.rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    late = rng.standard_normal(n) * np.exp(-6.9078 * t / room.rt60_s)
    late[: int(0.005 * SAMPLE_RATE)] = 0.0  # the diffuse field builds up after the reflections
    late = lfilter([0.5], [1.0, -0.5], late)  # walls absorb high frequencies
    for _ in range(6):  # early reflections off nearby surfaces, 2-25 ms after the direct sound
        at = int(rng.uniform(0.002, 0.025) * SAMPLE_RATE)
        late[at] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6) * np.exp(-at / n)
    late *= np.sqrt(10 ** (-room.drr_db / 10) / float(np.sum(np.square(late))))
    h = late
    h[0] = 1.0
    return h


def reverberate(x: np.ndarray, room: Room, rng: np.random.Generator,
                span: tuple[int, int]) -> np.ndarray:
    """`x` heard in `room`, at the same speech level (the tail beyond `x` is cut)."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(x, room_impulse(room, rng))[: len(x)]
    before, after = rms(x[span[0]:span[1]]), rms(wet[span[0]:span[1]])
    return wet * (before / after) if after > 0 else wet


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white noise."""
    y = rng.standard_normal(n)
    return y / (rms(y) or 1.0)


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS brown (1/f²) noise, DC removed: a fan, a fridge, traffic."""
    from scipy.signal import lfilter

    y = lfilter([1.0], [1.0, -0.995], rng.standard_normal(n + SAMPLE_RATE))[SAMPLE_RATE:]
    y -= y.mean()
    return y / (rms(y) or 1.0)


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS synthetic music: a chord progression of harmonic tones, a bass line, a
    kick drum and hi-hats at a random tempo."""
    beat = int(SAMPLE_RATE * 60 / rng.uniform(90, 140))
    out = np.zeros(n + 4 * beat)
    scale = 220.0 * 2 ** (np.array([0, 2, 3, 5, 7, 8, 10]) / 12)
    for bar in range(0, n, 4 * beat):
        root = int(rng.integers(len(scale)))
        length = 4 * beat
        t = np.arange(length) / SAMPLE_RATE
        env = np.exp(-t * 1.5)
        for step in (0, 2, 4):  # a triad of the scale
            f = scale[(root + step) % len(scale)] * (2 if root + step >= len(scale) else 1)
            for k in range(1, 5):
                out[bar:bar + length] += env * np.sin(2 * np.pi * f * k * t) / k**1.5 * 0.3
        bass = scale[root] / 4
        for b in range(4):
            tb = np.arange(beat) / SAMPLE_RATE
            at = bar + b * beat
            out[at:at + beat] += 0.6 * np.sin(2 * np.pi * bass * tb) * np.exp(-tb * 4)
            out[at:at + beat] += 0.8 * np.sin(2 * np.pi * 55 * tb * np.exp(-tb * 20)) \
                * np.exp(-tb * 25) * (b % 2 == 0)
            hat = at + beat // 2
            m = min(beat // 4, len(out) - hat)
            out[hat:hat + m] += 0.15 * np.diff(rng.standard_normal(m + 1)) \
                * np.exp(-np.arange(m) / SAMPLE_RATE * 60)
    y = out[:n]
    return y / (rms(y) or 1.0)


def _looped(talker: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`talker` (trimmed, unit RMS) repeated with short pauses from a random point."""
    start, end = active_span(talker)
    core = talker[start:end]
    core = core / (rms(core) or 1.0)
    gap = np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE))
    unit = np.concatenate([core, gap])
    reps = n // len(unit) + 2
    offset = int(rng.integers(len(unit)))
    return np.tile(unit, reps)[offset:offset + n]


def babble(n: int, talkers: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS babble: up to BABBLE_TALKERS other voices talking at once."""
    if not talkers:
        raise ValueError("babble needs other voices' speech")
    chosen = rng.permutation(len(talkers))[:BABBLE_TALKERS]
    y = sum((_looped(talkers[int(i)], n, rng) for i in chosen), np.zeros(n))
    return y / (rms(y) or 1.0)


def tv(n: int, talkers: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS television: one other voice over music MUSIC_UNDER_TALKER_DB below it."""
    if not talkers:
        raise ValueError("tv needs another voice's speech")
    voice = _looped(talkers[int(rng.integers(len(talkers)))], n, rng)
    y = voice + music(n, rng) * 10 ** (-MUSIC_UNDER_TALKER_DB / 20)
    return y / (rms(y) or 1.0)


def noise_signal(kind: str, n: int, rng: np.random.Generator,
                 talkers: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Unit-RMS noise of one of the NOISES."""
    if kind == "white":
        return white(n, rng)
    if kind == "brown":
        return brown(n, rng)
    if kind == "babble":
        return babble(n, talkers, rng)
    if kind == "tv":
        return tv(n, talkers, rng)
    raise ValueError(f"unknown noise {kind!r}")


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float,
               span: tuple[int, int]) -> np.ndarray:
    """`speech` plus `noise` scaled so that their power ratio over `span` is `snr_db`."""
    s = rms(speech[span[0]:span[1]])
    v = rms(noise[span[0]:span[1]]) or rms(noise)
    if v == 0:
        return speech.copy()
    return speech + noise * (s / v * 10 ** (-snr_db / 20))


def clip(x: np.ndarray, gain_db: float) -> np.ndarray:
    """`x` amplified by `gain_db` into a hard limit at full scale."""
    return np.clip(x * 10 ** (gain_db / 20), -1.0, 1.0)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A condition applied to one utterance."""

    mix: np.ndarray
    """What the microphone hears (float, before 16-bit conversion)."""
    speech: np.ndarray
    """The speech part of `mix` (after the room and the level change, before noise)."""
    span: tuple[int, int]
    """Where the speech is (samples)."""

    def pcm(self) -> bytes:
        """`mix` as internal-format audio (16-bit, clipped at full scale)."""
        return (np.clip(np.rint(self.mix * 32767), -32768, 32767).astype("<i2").tobytes())


def render(condition: Condition, speech: np.ndarray, rng: np.random.Generator,
           talkers: Sequence[np.ndarray] = ()) -> Rendered:
    """Apply `condition` to dry `speech` (float, any level, with or without silence)."""
    x, span = prepare(speech)
    if condition.room is not None:
        x = reverberate(x, condition.room, rng, span)
    if condition.gain_db:
        x = x * 10 ** (condition.gain_db / 20)
    mix = x
    if condition.noise is not None:
        noise = noise_signal(condition.noise, len(x), rng, talkers)
        mix = mix_at_snr(x, noise, condition.snr_db, span)
    if condition.clip_db is not None:
        mix = clip(mix, condition.clip_db)
    return Rendered(mix, x, span)


def measured_snr_db(rendered: Rendered) -> float:
    """The SNR of a rendered mix over its speech (for tests and reports)."""
    a, b = rendered.span
    noise = rendered.mix[a:b] - rendered.speech[a:b]
    return db(rms(rendered.speech[a:b]) / (rms(noise) or 1e-12))
