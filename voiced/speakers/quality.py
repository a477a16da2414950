"""Enrollment quality: is this recording good enough to define a person's voice?

A bad enrollment sample does lasting harm (every later utterance is compared with it), so
each sample is checked before it is stored, and a refusal says what to fix: too little
speech (webrtcvad decides which frames are speech), clipping, too quiet, or speech barely
above the background noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH, SAMPLES_PER_MS

FRAME_MS = 30
"""webrtcvad frame length used here (it accepts 10, 20 or 30 ms)."""
CLIP_LEVEL = 32_700
"""Samples at or beyond this magnitude count as clipped (full scale is 32767)."""


@dataclass(frozen=True, slots=True)
class QualityLimits:
    """What an enrollment sample must satisfy."""

    min_speech_ms: float = 1000.0
    max_clipped: float = 0.001
    """Largest share of clipped samples."""
    min_speech_dbfs: float = -40.0
    """Quietest acceptable speech level (RMS of the speech frames)."""
    min_snr_db: float = 15.0
    """Speech must be this much louder than the non-speech frames."""
    min_noise_ms: float = 300.0
    """The noise check needs a recording at least this long to judge."""
    vad_aggressiveness: int = 2


@dataclass(frozen=True, slots=True)
class QualityProblem:
    """One reason a sample was refused."""

    code: str
    """too_little_speech, clipped, too_quiet or noisy."""
    message: str
    """What is wrong and what to do about it."""


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Measurements of one sample and the problems found."""

    duration_ms: float
    speech_ms: float
    """Milliseconds of frames webrtcvad judged to be speech."""
    clipped: float
    """Share of samples at full scale (0..1)."""
    speech_dbfs: float
    """RMS level of the speech frames, dB relative to full scale (-inf: silence)."""
    speech_start_ms: float
    """Start of the first speech frame (0 when there is none)."""
    speech_end_ms: float
    """End of the last speech frame (0 when there is none)."""
    snr_db: float | None
    """Speech level over the background (the quietest tenth of the frames); None when the
    recording is too short to tell."""
    problems: tuple[QualityProblem, ...]

    @property
    def ok(self) -> bool:
        """True when the sample may be enrolled."""
        return not self.problems

    def describe(self) -> str:
        """One line: the problems, or the measurements when there are none."""
        if self.problems:
            return "; ".join(p.message for p in self.problems)
        snr = ("" if self.snr_db is None
               else ", over a silent background" if math.isinf(self.snr_db)
               else f", {self.snr_db:.0f} dB above the background")
        return (f"{self.speech_ms / 1000:.1f} s of speech at {self.speech_dbfs:.0f} dBFS"
                f"{snr}")


def _dbfs(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


def check_quality(pcm: bytes, limits: QualityLimits | None = None) -> QualityReport:
    """Measure an internal-format recording and list what makes it unfit for enrollment."""
    import webrtcvad

    limits = limits or QualityLimits()
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
    samples = np.frombuffer(pcm[:usable], dtype="<i2")
    frame = FRAME_MS * SAMPLES_PER_MS
    n_frames = samples.size // frame
    vad = webrtcvad.Vad(limits.vad_aggressiveness)
    speech_mask = np.zeros(n_frames, dtype=bool)
    for i in range(n_frames):
        chunk = samples[i * frame : (i + 1) * frame]
        speech_mask[i] = vad.is_speech(chunk.tobytes(), SAMPLE_RATE)
    frames = samples[: n_frames * frame].reshape(n_frames, frame) if n_frames else samples[:0]
    speech = frames[speech_mask].reshape(-1)
    speech_ms = float(speech_mask.sum() * FRAME_MS)
    magnitude = np.abs(samples.astype(np.int32))
    clipped = float(np.mean(magnitude >= CLIP_LEVEL)) if samples.size else 0.0
    speech_dbfs = _dbfs(speech)
    snr: float | None = None
    if n_frames * FRAME_MS >= limits.min_noise_ms and speech.size:
        # the quietest frames estimate the background: webrtcvad calls loud steady noise
        # speech, so its non-speech frames alone would miss exactly the noisy recordings
        levels = sorted(_dbfs(f) for f in frames)
        noise_dbfs = levels[len(levels) // 10]
        snr = math.inf if noise_dbfs == -math.inf else speech_dbfs - noise_dbfs

    problems: list[QualityProblem] = []
    if speech_ms < limits.min_speech_ms:
        problems.append(QualityProblem(
            "too_little_speech",
            f"only {speech_ms / 1000:.1f} s of speech found (at least "
            f"{limits.min_speech_ms / 1000:.1f} s is needed): say a whole sentence, "
            "close to the microphone",
        ))
    if clipped > limits.max_clipped:
        problems.append(QualityProblem(
            "clipped",
            f"{clipped:.1%} of the samples are clipped (distorted): lower the microphone "
            "gain or speak further from it",
        ))
    if speech.size and speech_dbfs < limits.min_speech_dbfs:
        problems.append(QualityProblem(
            "too_quiet",
            f"the speech is too quiet ({speech_dbfs:.0f} dBFS, at least "
            f"{limits.min_speech_dbfs:.0f} is needed): raise the microphone gain or speak "
            "closer",
        ))
    if snr is not None and snr < limits.min_snr_db:
        problems.append(QualityProblem(
            "noisy",
            f"the background is too loud (speech is only {snr:.0f} dB above it, "
            f"{limits.min_snr_db:.0f} dB is needed): record in a quieter place",
        ))
    voiced_frames = np.flatnonzero(speech_mask)
    return QualityReport(
        duration_ms=samples.size / SAMPLES_PER_MS,
        speech_ms=speech_ms,
        clipped=clipped,
        speech_dbfs=speech_dbfs,
        speech_start_ms=float(voiced_frames[0] * FRAME_MS) if voiced_frames.size else 0.0,
        speech_end_ms=float((voiced_frames[-1] + 1) * FRAME_MS) if voiced_frames.size else 0.0,
        snr_db=snr,
        problems=tuple(problems),
    )
