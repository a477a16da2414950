"""The noise floor added to the audio before pocketsphinx decodes it.

A low noise floor is added to the audio, set from the utterance's own level:
`FLOOR_BELOW_DB` under the loudest 20 ms frame of its first `FLOOR_WINDOW_MS` (at
least `FLOOR_MIN_DBFS`), one level for the whole utterance, at fixed sample positions
so the result does not depend on how the audio was chunked. Stretches of exact digital
silence (padding, noise suppression on a satellite, a muted microphone) throw
pocketsphinx's silence model and cepstral mean off: the search then ends in the middle
of the grammar. A fixed -60 dBFS floor fixed that at a normal level but buried a quiet
speaker (-51 dBFS: 20% of commands understood on the benchmark's training split; 60%
with the relative floor). A floor that rose with the speech during the utterance cost
half the commands in talker noise; white noise beat brown; 40 dB under the peak did as
well as 50 on the benchmark, but 50 keeps every spoken test fixture's exact words.
"""

from __future__ import annotations

import math

import numpy as np

from voiced.const import SAMPLE_RATE

FLOOR_BELOW_DB = 50.0
"""The added noise floor lies this far under the utterance's loudest 20 ms frame."""
FLOOR_MIN_DBFS = -90.0
"""The floor is never lower than this (about 1 LSB: digital silence always gets some)."""
FLOOR_WINDOW_MS = 1000
"""Audio held back at the start of an utterance to set the floor's level."""
FLOOR_FRAME_MS = 20
_NOISE_SEED = 0x766F6963
_FRAME = SAMPLE_RATE * FLOOR_FRAME_MS // 1000
_WINDOW_FRAMES = FLOOR_WINDOW_MS // FLOOR_FRAME_MS


class NoiseFloor:
    """One second of fixed unit Gaussian noise, added by absolute sample position.

    Indexing by position makes the result independent of how the audio was chunked.
    """

    def __init__(self) -> None:
        self.table = np.random.default_rng(_NOISE_SEED).normal(0.0, 1.0, SAMPLE_RATE)

    def add(self, samples: np.ndarray, position: int, dbfs: float | np.ndarray) -> bytes:
        """`samples` (int16) from `position` on, plus noise at `dbfs` RMS (one level, or
        one per sample)."""
        index = (np.arange(len(samples)) + position) % len(self.table)
        rms = 32768.0 * np.power(10.0, np.asarray(dbfs, dtype=np.float64) / 20)
        mixed = samples.astype(np.float64) + self.table[index] * rms
        return np.clip(np.rint(mixed), -32768, 32767).astype("<i2").tobytes()


NOISE = NoiseFloor()


class LevelFloor:
    """The per-utterance noise floor: audio in, floored audio out.

    The floor's level is set once per utterance, `FLOOR_BELOW_DB` under the loudest 20 ms
    frame (at fixed positions) of its first `FLOOR_WINDOW_MS`, so that much is held back
    before decoding starts. A shorter window (0.4 s, tried to spread the decoding of 20
    satellites starting together) heard less in talker noise on the accuracy benchmark's
    training split and misheard a spoken test command ("ten minutes" as "two minutes").
    An utterance shorter than the window goes out in `flush`.
    """

    def __init__(self) -> None:
        self._held: list[np.ndarray] = []
        self._count = 0
        self._position = 0
        """Samples already handed out."""
        self._level: float | None = None
        """The floor in dBFS, once set."""

    @property
    def position(self) -> int:
        """Samples handed out so far."""
        return self._position

    def push(self, samples: np.ndarray) -> bytes:
        """Take more samples; return the floored audio that is ready."""
        if self._level is not None:
            return self._out(samples)
        self._held.append(samples)
        self._count += len(samples)
        if self._count < _WINDOW_FRAMES * _FRAME:
            return b""
        return self._release()

    def flush(self) -> bytes:
        """The rest (all of an utterance shorter than the window)."""
        return self._release() if self._level is None and self._count else b""

    def _release(self) -> bytes:
        held = np.concatenate(self._held)
        self._held, self._count = [], 0
        window = held[: _WINDOW_FRAMES * _FRAME].astype(np.float64)
        frames = -(-len(window) // _FRAME)
        padded = np.zeros(frames * _FRAME)
        padded[: len(window)] = window
        peak = float(np.sqrt((padded.reshape(frames, _FRAME) ** 2).mean(axis=1)).max())
        self._level = max(FLOOR_MIN_DBFS, 20 * math.log10(max(peak, 1e-9) / 32768.0)
                          - FLOOR_BELOW_DB)
        return self._out(held)

    def _out(self, samples: np.ndarray) -> bytes:
        assert self._level is not None
        out = NOISE.add(samples, self._position, self._level)
        self._position += len(samples)
        return out
