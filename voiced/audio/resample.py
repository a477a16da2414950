"""A stateful streaming polyphase resampler.

Satellites send audio in small chunks (10–64 ms). Resampling each chunk on its own
clicks at every boundary, because a FIR filter needs the samples on both sides of a
point. `StreamResampler` keeps the filter's history between calls, so the output of a
stream fed in pieces is the same, sample for sample, as the output of the whole signal
fed at once.

The filter is the one `scipy.signal.resample_poly` uses (Kaiser-windowed sinc, cutoff at
the lower Nyquist frequency, 10 zero crossings each side), and the output is shifted
by the filter's delay, so `y[n]` lines up with the input at time `n / rate_out`.

A filter has `20 × max(up, down) + 1` taps, where `up/down` is the rate ratio in lowest
terms: 121 taps for 48 kHz → 16 kHz, 8821 for 44.1 kHz, but 3.8 million for 191999 Hz.
Filters are designed with numpy alone (importing scipy.signal takes over a second, too
long for the event loop), cached per rate pair (`filter_for`), and refused beyond
`MAX_RATIO_TERM`; callers accept only `voiced.const.SUPPORTED_RATES` anyway.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from math import gcd

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

_HALF_ZEROS = 10
"""Zero crossings of the sinc on each side of the filter's centre (as resample_poly)."""
_KAISER_BETA = 5.0
_BLOCK_OUT = 4096
"""Outputs computed per vectorised step; bounds the temporary index matrix."""
MAX_RATIO_TERM = 1000
"""Largest `max(up, down)` accepted: bounds a filter to 20001 taps (160 kB)."""
FILTER_CACHE_SIZE = 32
"""Filters kept (one per rate pair); more than the supported rates need."""


def _lowpass(numtaps: int, cutoff: float, beta: float) -> FloatArray:
    """A Kaiser-windowed sinc low-pass with unit gain at DC, as `scipy.signal.firwin`.

    `cutoff` is relative to the Nyquist frequency (0..1).
    """
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def filter_for(rate_in: int, rate_out: int) -> tuple[FloatArray, int]:
    """The polyphase filter (read-only, shared) and its delay for one rate pair.

    Built once per pair and cached (bounded); ValueError when the pair's filter would be
    longer than `MAX_RATIO_TERM` allows.
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if max(up, down) > MAX_RATIO_TERM:
        raise ValueError(
            f"resampling {rate_in} Hz to {rate_out} Hz needs a {20 * max(up, down) + 1}-tap "
            f"filter; at most {20 * MAX_RATIO_TERM + 1} taps are allowed"
        )
    return _polyphase(up, down)


@lru_cache(maxsize=FILTER_CACHE_SIZE)
def _polyphase(up: int, down: int) -> tuple[FloatArray, int]:
    """The filter split into `up` phases (rows), and its delay in output samples.

    Row `p` holds taps `h[p], h[p + up], h[p + 2*up], ...`, already scaled by `up` to
    make up for the zeros that upsampling inserts.
    """
    if up == down:
        identity = np.ones((1, 1))
        identity.setflags(write=False)
        return identity, 0
    max_rate = max(up, down)
    half_len = _HALF_ZEROS * max_rate
    taps = _lowpass(2 * half_len + 1, 1.0 / max_rate, _KAISER_BETA) * up
    # leading zeros make the delay a whole number of output samples (as resample_poly)
    pre_pad = -half_len % down
    taps = np.concatenate((np.zeros(pre_pad), taps))
    per_phase = -(-len(taps) // up)
    padded = np.zeros(per_phase * up)
    padded[: len(taps)] = taps
    phases = np.ascontiguousarray(padded.reshape(per_phase, up).T)
    phases.setflags(write=False)  # shared by every stream at this ratio
    delay = (half_len + pre_pad) // down
    return phases, delay


class StreamResampler:
    """Resamples one stream from `rate_in` to `rate_out`, carrying state across calls.

    `process()` takes float samples and returns as many output samples as the input so
    far determines; `flush()` returns the tail still inside the filter and resets.
    ValueError for a rate pair whose filter `filter_for` refuses.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self._phases, self._delay = filter_for(rate_in, rate_out)
        g = gcd(rate_in, rate_out)
        self.rate_in = rate_in
        """Input sample rate (Hz)."""
        self.rate_out = rate_out
        """Output sample rate (Hz)."""
        self._up = rate_out // g
        self._down = rate_in // g
        self._taps = self._phases.shape[1]
        self.reset()

    @property
    def filter(self) -> FloatArray:
        """The polyphase filter in use (shared with every stream of this rate pair)."""
        return self._phases

    @property
    def delay_samples(self) -> int:
        """Filter delay in output samples; the first this many outputs are dropped."""
        return self._delay

    def reset(self) -> None:
        """Forget the stream: the next input starts a new signal."""
        # the last `taps - 1` input samples; zeros before the stream began
        self._hist: FloatArray = np.zeros(self._taps - 1)
        self._n_in = 0
        """Input samples consumed, counted from the current origin."""
        self._n_out = 0
        """Next output index, counted from the same origin."""
        self._skip = self._delay
        self._flushed_in = 0

    def process(self, samples: FloatArray) -> FloatArray:
        """Feed input samples; return the output samples they complete."""
        if self._up == self._down:
            return samples.astype(np.float64, copy=True)
        x = np.asarray(samples, dtype=np.float64)
        buf = np.concatenate((self._hist, x))
        # global input index of buf[0]
        base = self._n_in - len(self._hist)
        self._n_in += len(x)
        # output n needs input index floor(n*down/up), which must already exist
        n_end = (self._n_in * self._up + self._down - 1) // self._down
        out = self._compute(buf, base, self._n_out, n_end)
        self._n_out = n_end
        self._hist = buf[len(buf) - (self._taps - 1) :]
        self._rebase()
        if self._skip:
            dropped = min(self._skip, len(out))
            self._skip -= dropped
            out = out[dropped:]
        return out

    def flush(self) -> FloatArray:
        """Return the outputs still delayed inside the filter, then reset."""
        if self._up == self._down:
            self.reset()
            return np.zeros(0)
        # the outputs still owed are `delay` raw ones, less any not yet skipped;
        # zeros push them out of the filter
        wanted = self._delay - self._skip
        pad = -(-(self._delay + 1) * self._down // self._up) + 1
        tail = self.process(np.zeros(pad))[:wanted]
        self.reset()
        return tail

    def _compute(self, buf: FloatArray, base: int, n_start: int, n_end: int) -> FloatArray:
        """Outputs `n_start..n_end-1` from `buf`, whose first sample has index `base`."""
        out = np.empty(max(0, n_end - n_start))
        k = np.arange(self._taps)
        for block in range(n_start, n_end, _BLOCK_OUT):
            n = np.arange(block, min(block + _BLOCK_OUT, n_end), dtype=np.int64)
            t = n * self._down
            phase = t % self._up
            newest = t // self._up - base
            window = buf[newest[:, None] - k[None, :]]
            out[block - n_start : block - n_start + len(n)] = np.einsum(
                "ij,ij->i", window, self._phases[phase]
            )
        return out

    def _rebase(self) -> None:
        """Move the origin forward so the counters stay small on endless streams."""
        cycles = self._n_out // self._up
        if cycles:
            self._n_out -= cycles * self._up
            self._n_in -= cycles * self._down
