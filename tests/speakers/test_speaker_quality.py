"""Enrollment quality checks on real synthesized speech and its damaged copies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voiced.audio.wav import read_wav_file
from voiced.const import SAMPLE_RATE
from voiced.speakers.quality import check_quality


@pytest.fixture(scope="module")
def speech(make_wavs: Callable[..., tuple[list[Path], list[Path]]]) -> np.ndarray:
    """About 3 s of real-speaker speech, padded with half a second of silence each side."""
    enroll, _ = make_wavs("flite-awb", n_enroll=1, n_test=0)
    s = np.frombuffer(read_wav_file(enroll[0]), dtype="<i2").astype(np.float64)
    pad = np.zeros(SAMPLE_RATE // 2)
    return np.concatenate([pad, s, pad])


def pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def codes(samples: np.ndarray) -> set[str]:
    return {p.code for p in check_quality(pcm(samples)).problems}


def test_clean_speech_passes(speech: np.ndarray) -> None:
    report = check_quality(pcm(speech))
    assert report.ok, report.describe()
    assert report.speech_ms >= 1000
    assert report.clipped == 0.0
    assert report.snr_db is not None and report.snr_db > 30


def test_speech_over_digital_silence_is_described_in_words(speech: np.ndarray) -> None:
    """A recording padded with exact zeros has no measurable background: the verdict says
    so instead of "inf dB"."""
    padded = np.concatenate([np.zeros(SAMPLE_RATE // 2), speech, np.zeros(SAMPLE_RATE // 2)])
    report = check_quality(pcm(padded))
    assert report.snr_db is not None and np.isinf(report.snr_db)
    assert "over a silent background" in report.describe()
    assert "inf" not in report.describe()


def test_clipped_speech_is_refused(speech: np.ndarray) -> None:
    report = check_quality(pcm(speech * 10))
    assert "clipped" in {p.code for p in report.problems}
    assert "lower the microphone gain" in report.describe()


def test_quiet_speech_is_refused(speech: np.ndarray) -> None:
    # -30 dB: still detected as speech, but far too quiet for a good profile
    assert "too_quiet" in codes(speech * 10 ** (-30 / 20))


def test_too_little_speech_is_refused(speech: np.ndarray) -> None:
    half_second = speech[SAMPLE_RATE // 2 : SAMPLE_RATE]
    report = check_quality(pcm(half_second))
    assert [p.code for p in report.problems] == ["too_little_speech"]
    assert "say a whole sentence" in report.describe()


def test_silence_is_refused() -> None:
    assert "too_little_speech" in codes(np.zeros(3 * SAMPLE_RATE))


def test_noisy_speech_is_refused(speech: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noisy = speech + rng.normal(0, 2000, speech.size)
    assert "noisy" in codes(noisy)
    mild = speech + rng.normal(0, 50, speech.size)
    assert codes(mild) == set()
