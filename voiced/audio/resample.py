"""A stateful streaming polyphase resampler.

Satellites send audio in small chunks (10–64 ms). Resampling each chunk on its own
clicks at every boundary, because a FIR filter needs the samples on both sides of a
point. `StreamResampler` keeps the filter's history between calls, so the output of a
stream fed in pieces is the same, sample for sample, as the output of the whole signal
fed at once.

The filter is the one `scipy.signal.resample_poly` uses (Kaiser-windowed sinc, cutoff at
the lower Nyquist frequency, 10 zero crossings each side), and the output is shifted
by the filter's delay, so `y[n]` lines up with the input at time `n / rate_out`.
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


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int) -> tuple[FloatArray, int]:
    """The filter split into `up` phases (rows), and its delay in output samples.

    Row `p` holds taps `h[p], h[p + up], h[p + 2*up], ...`, already scaled by `up` to
    make up for the zeros that upsampling inserts.
    """
    from scipy.signal import firwin  # scipy.signal is slow to import; only resampling needs it

    max_rate = max(up, down)
    half_len = _HALF_ZEROS * max_rate
    taps = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", _KAISER_BETA)) * up
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
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        g = gcd(rate_in, rate_out)
        self.rate_in = rate_in
        """Input sample rate (Hz)."""
        self.rate_out = rate_out
        """Output sample rate (Hz)."""
        self._up = rate_out // g
        self._down = rate_in // g
        if self._up == self._down:
            self._phases, self._delay = np.ones((1, 1)), 0
        else:
            self._phases, self._delay = _polyphase(self._up, self._down)
        self._taps = self._phases.shape[1]
        self.reset()

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
