"""StreamResampler: chunked streaming equals scipy's whole-signal resample_poly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from voiced.audio.resample import MAX_RATIO_TERM, StreamResampler, filter_for
from voiced.const import SAMPLE_RATE, SUPPORTED_RATES


@pytest.mark.parametrize("rate", [11025, 32000, 44100, 8000, SAMPLE_RATE])
def test_random_chunking_matches_whole_signal(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate // 2)
    resampler = StreamResampler(rate, SAMPLE_RATE)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, 700))  # empty chunks included
        parts.append(resampler.process(x[i : i + n]))
        i += n
    parts.append(resampler.flush())
    y = np.concatenate(parts)
    ref = resample_poly(x, SAMPLE_RATE, rate)
    assert len(y) == len(ref)
    assert np.max(np.abs(y - ref)) < 1e-9


def test_flush_resets_for_a_new_stream() -> None:
    x = np.sin(np.arange(4410) / 7)
    resampler = StreamResampler(44100, SAMPLE_RATE)
    first = np.concatenate([resampler.process(x), resampler.flush()])
    second = np.concatenate([resampler.process(x), resampler.flush()])
    assert np.array_equal(first, second)
    assert resampler.delay_samples > 0


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, SAMPLE_RATE)


def test_filters_are_built_once_per_rate_pair_and_shared() -> None:
    first = StreamResampler(44100, SAMPLE_RATE)
    second = StreamResampler(44100, SAMPLE_RATE)
    assert first.filter is second.filter is filter_for(44100, SAMPLE_RATE)[0]
    assert not first.filter.flags.writeable  # shared: no stream may change it
    assert filter_for(48000, SAMPLE_RATE)[0] is not first.filter


def test_supported_rates_have_small_filters() -> None:
    for rate in SUPPORTED_RATES:
        phases, _ = filter_for(rate, SAMPLE_RATE)
        assert phases.size <= 13_440, rate  # 11025 Hz: 640 phases of 21 taps
        assert phases.shape[1] <= 241, rate  # taps per output sample (192 kHz)


def test_a_costly_rate_pair_is_refused_not_built() -> None:
    """191999 Hz → 16 kHz reduces to 16000/191999: a 3.8-million-tap filter."""
    with pytest.raises(ValueError, match="taps"):
        StreamResampler(191_999, SAMPLE_RATE)
    with pytest.raises(ValueError, match="taps"):
        filter_for(SAMPLE_RATE, MAX_RATIO_TERM + 1)
