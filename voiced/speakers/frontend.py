"""resemblyzer's front end, step by step as audio arrives: volume, silence trimming and
mel frames (`voiced.speakers.streaming` runs the LSTM on top).

The arithmetic is resemblyzer's (`normalize_volume`, `trim_long_silences`,
`wav_to_mel_spectrogram`), framed so each step can run on a growing utterance.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH

Floats = npt.NDArray[np.float32]

INT16_MAX = 2**15 - 1
"""resemblyzer's scale for levels and for the PCM it gives webrtcvad."""
TARGET_DBFS = -30.0
"""resemblyzer's `audio_norm_target_dBFS`."""
VAD_FRAME = 30 * SAMPLE_RATE // 1000
"""Samples per webrtcvad frame in resemblyzer's trimming (`vad_window_length`, 30 ms)."""
VAD_AVERAGE = 8
"""`vad_moving_average_width`: frames averaged."""
VAD_DILATE = 6
"""`vad_max_silence_length`: the mask is dilated by a structure one longer than this."""
VAD_LOOKAHEAD = VAD_AVERAGE // 2 + VAD_DILATE // 2
"""Frames after a VAD frame that decide whether it is kept (7)."""
HOP = 10 * SAMPLE_RATE // 1000
"""Samples per mel frame (`mel_window_step`, 10 ms)."""
N_FFT = 25 * SAMPLE_RATE // 1000
"""Mel window (`mel_window_length`, 25 ms), centred on its frame."""
PAD = N_FFT // 2
N_MELS = 40
def volume_gain(wav: Floats) -> np.float32 | None:
    """The factor resemblyzer's `normalize_volume(increase_only=True)` scales `wav` by.

    None when it leaves the audio as it is (at or above the target, or digital silence).
    The arithmetic is resemblyzer's (float32), so `wav * gain` is bit for bit what it makes.
    """
    if not np.any(wav):
        return None
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    if change < 0:
        return None
    return np.float32(10 ** (change / 20))


def gain_db(gain: np.float32 | None) -> float:
    """A gain in dB (None: 0)."""
    return 0.0 if gain is None else 20 * math.log10(float(gain))


def speech_mask(flags: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """resemblyzer's `trim_long_silences` mask over VAD frames, from webrtcvad's flags.

    A frame is kept when, within 3 frames either side, there is a frame where at least 5 of
    the 8 frames from 3 before to 4 after it are speech (frames past either end count as
    silence). Entry k depends on flags k - 6 .. k + 7 only.
    """
    if flags.size == 0:
        return np.zeros(0, dtype=bool)
    half = VAD_AVERAGE // 2
    padded = np.concatenate([np.zeros(half - 1), flags, np.zeros(half)])
    # the moving average is rounded half to even: 4 of 8 is 0.5, which rounds down
    voiced = np.convolve(padded, np.ones(VAD_AVERAGE), "valid") >= half + 1
    side = VAD_DILATE // 2
    padded = np.concatenate([np.zeros(side), voiced, np.zeros(side)])
    mask: npt.NDArray[np.bool_] = np.convolve(padded, np.ones(VAD_DILATE + 1), "valid") > 0
    return mask


@functools.cache
def mel_filters() -> tuple[npt.NDArray[np.float64], Floats]:
    """The STFT window and mel filter bank of librosa's `melspectrogram` for resemblyzer."""
    import librosa

    window = librosa.filters.get_window("hann", N_FFT, fftbins=True)
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
    return np.asarray(window, dtype=np.float64), np.asarray(basis, dtype=np.float32)


class Growing:
    """An append-only array with amortized growth (float32 samples unless told).

    `shape`: the shape of one entry (e.g. `(40,)` for mel frames); `()` for scalars.
    """

    def __init__(self, capacity: int = SAMPLE_RATE, dtype: type = np.float32,
                 shape: tuple[int, ...] = ()) -> None:
        self._data: npt.NDArray[Any] = np.zeros((capacity, *shape), dtype=dtype)
        self.size = 0

    def append(self, values: npt.NDArray[Any]) -> None:
        end = self.size + len(values)
        if end > len(self._data):
            grown = np.zeros((max(end, 2 * len(self._data)), *self._data.shape[1:]),
                             dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : end] = values
        self.size = end

    def truncate(self, size: int) -> None:
        """Forget the entries from `size` on."""
        self.size = min(self.size, max(0, size))

    def view(self) -> npt.NDArray[Any]:
        """The values so far (no copy: valid until the next `append`)."""
        return self._data[: self.size]

    def get(self, start: int, stop: int) -> npt.NDArray[Any]:
        """Values `start:stop`, zeros where that runs past the end (a copy)."""
        out = np.zeros((stop - start, *self._data.shape[1:]), dtype=self._data.dtype)
        have = min(stop, self.size) - start
        if have > 0:
            out[:have] = self._data[start : start + have]
        return out


def to_float(samples: npt.NDArray[np.int16]) -> Floats:
    """`pcmto_float`: what resemblyzer is given."""
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


class Trim:
    """Silence trimming as audio arrives, with webrtcvad run at one gain.

    `trimmed` holds the kept samples without the gain (the mel frames are scaled instead),
    after `PAD` zeros (the mel frames are centred).
    """

    def __init__(self, gain: np.float32 | None) -> None:
        import webrtcvad

        self.gain = gain
        self._vad = webrtcvad.Vad(3)
        self.flags = np.zeros(0, dtype=np.int8)
        self.keep = np.zeros(0, dtype=bool)
        """Keep-or-cut of the VAD frames decided so far."""
        self.trimmed = Growing()
        self.trimmed.append(np.zeros(PAD, dtype=np.float32))

    def update(self, samples: npt.NDArray[np.int16], final: bool) -> None:
        """Run webrtcvad on new complete frames; cut or keep those now decided."""
        total = len(samples) // VAD_FRAME
        done = len(self.flags)
        if total > done:
            wav = to_float(samples[done * VAD_FRAME : total * VAD_FRAME])
            if self.gain is not None:
                wav = wav * self.gain
            pcm = np.round(wav * INT16_MAX).astype(np.int16).tobytes()
            width = VAD_FRAME * SAMPLE_WIDTH
            new = [self._vad.is_speech(pcm[i : i + width], sample_rate=SAMPLE_RATE)
                   for i in range(0, len(pcm), width)]
            self.flags = np.concatenate([self.flags, np.array(new, dtype=np.int8)])
        decided = total if final else max(0, total - VAD_LOOKAHEAD)
        masked = len(self.keep)
        if decided <= masked:
            return
        # entries masked..decided look 6 frames back: flags before `lo` cannot reach them
        lo = max(0, masked - VAD_LOOKAHEAD)
        new_keep = speech_mask(self.flags[lo:total])[masked - lo : decided - lo]
        self.keep = np.concatenate([self.keep, new_keep])
        for k in np.flatnonzero(new_keep) + masked:
            self.trimmed.append(to_float(samples[k * VAD_FRAME : (k + 1) * VAD_FRAME]))

    def kept_before(self, frame: int) -> int:
        """Trimmed samples that come from VAD frames before `frame`."""
        return int(np.count_nonzero(self.keep[:frame])) * VAD_FRAME


def mel_frames(trimmed: Growing, start: int, stop: int) -> Floats:
    """Mel power frames start..stop of the trimmed audio (zeros past its end), (n, 40).

    librosa's `melspectrogram` with resemblyzer's settings, framed here: the buffer already
    holds the centring pad, and the window and filters are made once.
    """
    window, basis = mel_filters()
    y = trimmed.get(start * HOP, (stop - 1) * HOP + N_FFT)
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * window, axis=1).astype(np.complex64)) ** 2
    return np.ascontiguousarray(power @ basis.T, dtype=np.float32)
