"""StreamResampler: chunked streaming equals scipy's whole-signal resample_poly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from voiced.audio.resample import StreamResampler
from voiced.const import SAMPLE_RATE


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
