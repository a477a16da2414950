"""How well a satellite hears: per-frame speech-band levels, a noise floor, evidence.

Arbitration (voiced.arbitration) compares satellites that heard the same command. Each
satellite of a room group keeps a `Meter`: for every 20 ms frame it stores the power in
the speech band (300-3400 Hz, through a Hann-windowed FFT), whether the VAD called the
frame speech and how many samples were clipped, over the last `HISTORY_S`. `evidence()`
then measures a stretch of the satellite's utterance: its level against that satellite's
own recent noise floor (a low percentile of the frames before it), so a hotter microphone
is not favoured by loudness alone; and how sharp the speech sounds there. Reverberation
and noise both fill the gaps between syllables: a satellite far from the speaker hears a
flatter level envelope (`modulation_db`, the spread of the frame levels) and softer
attacks (`onset_db`, the steepest rise from one frame to the next) than a near one, even
where the reverberant field makes both about as loud.

Pure and synchronous: numpy only, no I/O.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from voiced.const import SAMPLE_RATE, VAD_FRAME_MS, VAD_FRAME_SAMPLES

BAND_HZ = (300.0, 3400.0)
"""The speech band (telephone band: where the energy of voiced speech is)."""
HISTORY_S = 6.0
"""Frames remembered: the noise floor's history plus the stretch measured."""
FLOOR_S = 4.0
"""Audio before the measured stretch that the noise floor is taken from (at most)."""
FLOOR_PERCENTILE = 10.0
"""The noise floor is this percentile of the frames' speech-band levels: the quiet
moments between sounds, which a few loud frames do not move."""
MIN_FLOOR_FRAMES = 25
"""With less history than this (a satellite that just connected), the measured stretch
itself counts towards the floor too."""
LEVEL_MIN_DBFS = -100.0
"""The quietest level reported (digital silence)."""
CLIP_LEVEL = 32000
"""A sample at or beyond this magnitude counts as clipped (-0.2 dBFS)."""

BANDS = 10
"""Sub-bands across the speech band whose levels the spectral flux compares."""
BAND_EDGES_HZ = tuple(150.0 * (8000.0 / 150.0) ** (k / 16) for k in range(3, 3 + BANDS + 1))
"""Their edges: ten log-spaced bands of about a third of an octave, 315 to 3770 Hz."""
BAND_FLOOR = 1e-12
"""Power (relative to full scale) added to each sub-band before its log (-120 dBFS)."""

_WINDOW = np.hanning(VAD_FRAME_SAMPLES).astype(np.float32)
_BINS = np.fft.rfftfreq(VAD_FRAME_SAMPLES, 1 / SAMPLE_RATE)
_BAND = np.flatnonzero((_BINS >= BAND_HZ[0]) & (_BINS <= BAND_HZ[1]))
_SUB = [np.flatnonzero((_BINS >= lo) & (_BINS < hi))
        for lo, hi in itertools.pairwise(BAND_EDGES_HZ)]
_SUB_START = np.array([int(b[0]) for b in _SUB])
_SUB_STOP = int(_SUB[-1][-1]) + 1
# mean square of the band-passed frame, relative to full scale: Parseval for a one-sided
# spectrum, corrected for the window's power (a Hann window keeps 3/8 of it)
_NORM = 2.0 / (VAD_FRAME_SAMPLES**2 * float(np.mean(_WINDOW**2)) * 32768.0**2)


def frame_levels(frame: bytes) -> tuple[float, int]:
    """(speech-band level in dBFS, clipped samples) of one 20 ms internal-format frame."""
    level, clipped, _ = frame_analysis(frame)
    return level, clipped


def frame_analysis(frame: bytes) -> tuple[float, int, np.ndarray]:
    """`frame_levels` and the levels of the frame's BANDS sub-bands (dBFS)."""
    x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    clipped = int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
    if x.size != VAD_FRAME_SAMPLES:
        raise ValueError(f"a level frame is {VAD_FRAME_SAMPLES} samples, got {x.size}")
    power_bins = np.square(np.abs(np.fft.rfft(x * _WINDOW)))
    power = float(np.sum(power_bins[_BAND])) * _NORM
    sub = np.add.reduceat(power_bins[:_SUB_STOP], _SUB_START) * _NORM
    bands = 10 * np.log10(sub + BAND_FLOOR)
    return (10 * math.log10(power) if power > 0 else LEVEL_MIN_DBFS), clipped, bands


@dataclass(frozen=True, slots=True)
class Evidence:
    """How well one satellite heard a stretch of speech."""

    snr_db: float
    """Speech-band level of the speech frames over the satellite's own noise floor (dB)."""
    level_dbfs: float
    """Speech-band level of the speech frames (dBFS): loudness, microphone gain included."""
    floor_dbfs: float
    """The satellite's recent noise floor in the speech band (dBFS)."""
    modulation_db: float
    """Standard deviation of the stretch's frame levels (dB): how far the envelope dips
    between syllables."""
    onset_db: float
    """The steepest rise of the level from one frame to the next in the stretch (dB)."""
    speech_ratio: float
    """Share of the stretch's frames the VAD called speech (0..1)."""
    clipped: float
    """Share of the stretch's samples at full scale (0..1)."""
    scored_ms: float
    """Length of the stretch measured (ms)."""
    wake_score: float | None = None
    """The satellite's own wake word score (0..1), when it reported one."""
    flux_db: float = 0.0
    """Spectral flux: the mean change of the sub-bands' levels from one frame to the next
    (dB). Reverberation smears each syllable into the next in every band, so the far
    satellite's spectrum changes less from frame to frame."""
    rise_db: float = 0.0
    """The 95th percentile of the frame-to-frame changes of the speech-band level (dB):
    the attacks, less sensitive to a single frame than `onset_db`."""
    band_modulation_db: float = 0.0
    """The sub-bands' level spread (standard deviation over the stretch, averaged over
    the bands, dB): the modulation per band."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (camelCase, rounded)."""
        return {"snrDb": round(self.snr_db, 2), "levelDbfs": round(self.level_dbfs, 2),
                "floorDbfs": round(self.floor_dbfs, 2),
                "fluxDb": round(self.flux_db, 2), "riseDb": round(self.rise_db, 2),
                "bandModulationDb": round(self.band_modulation_db, 2),
                "modulationDb": round(self.modulation_db, 2),
                "onsetDb": round(self.onset_db, 2),
                "speechRatio": round(self.speech_ratio, 3),
                "clipped": round(self.clipped, 5), "scoredMs": round(self.scored_ms, 1),
                "wakeScore": self.wake_score}


class Meter:
    """A satellite's recent frames, measured; `count` numbers the frames pushed so far."""

    def __init__(self, history_s: float = HISTORY_S) -> None:
        self.size = max(1, round(history_s * 1000 / VAD_FRAME_MS))
        self._level = np.full(self.size, LEVEL_MIN_DBFS)
        self._speech = np.zeros(self.size, dtype=bool)
        self._clipped = np.zeros(self.size, dtype=np.int32)
        self._bands = np.full((self.size, BANDS), LEVEL_MIN_DBFS, dtype=np.float32)
        self.count = 0
        """Frames pushed since the meter was made."""

    def push(self, frame: bytes, speech: bool) -> None:
        """Measure one frame; `speech` is the VAD's decision (False when not asked)."""
        level, clipped, bands = frame_analysis(frame)
        i = self.count % self.size
        self._level[i], self._speech[i], self._clipped[i] = level, speech, clipped
        self._bands[i] = bands
        self.count += 1

    def evidence(self, first: int, end: int | None, frames: int,
                 wake_score: float | None = None) -> Evidence | None:
        """`frames` frames from frame number `first` (fewer when `end`, or now, comes
        first), against the floor of up to FLOOR_S before them. None when nothing of them
        is left to measure."""
        end = min(self.count if end is None else end, self.count, first + frames)
        oldest = max(0, self.count - self.size)
        start = max(first, oldest)
        if end <= start:
            return None
        span = np.arange(start, end) % self.size
        level = self._level[span]
        speech = self._speech[span]
        floor_from = max(oldest, start - round(FLOOR_S * 1000 / VAD_FRAME_MS))
        before = self._level[np.arange(floor_from, start) % self.size]
        if before.size < MIN_FLOOR_FRAMES:
            before = np.concatenate([before, level])
        floor = float(np.percentile(before, FLOOR_PERCENTILE))
        voiced = level[speech] if speech.any() else level
        mean_power = float(np.mean(np.power(10.0, voiced / 10)))
        loud = 10 * math.log10(mean_power) if mean_power > 0 else LEVEL_MIN_DBFS
        clipped = float(np.sum(self._clipped[span])) / (span.size * VAD_FRAME_SAMPLES)
        rises = np.diff(self._level[np.arange(max(oldest, start - 1), end) % self.size])
        onset = float(np.max(rises)) if rises.size else 0.0
        bands = self._bands[span].astype(np.float64)
        steps = np.diff(level)
        return Evidence(loud - floor, loud, floor, float(np.std(level)), onset,
                        float(np.mean(speech)), clipped, span.size * VAD_FRAME_MS, wake_score,
                        flux_db=float(np.mean(np.abs(np.diff(bands, axis=0))))
                        if span.size > 1 else 0.0,
                        rise_db=float(np.percentile(steps, 95)) if steps.size else 0.0,
                        band_modulation_db=float(np.mean(np.std(bands, axis=0))))
