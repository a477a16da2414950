"""WAV parsing and building, and conversion of any PCM to the internal format.

Hermes satellites wrap every 10–64 ms of microphone audio in a complete small WAV file,
in whatever rate, width and channel count their sound card gives. `parse_wav` reads such
a file from memory without trusting its sizes; `StreamConverter` turns a stream of them
into 16 kHz, 16-bit, mono (see `voiced.const`) without clicks at chunk boundaries.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voiced.audio.resample import StreamResampler
from voiced.const import CHANNELS, MAX_AUDIO_PAYLOAD, SAMPLE_RATE, SAMPLE_WIDTH, SUPPORTED_RATES
from voiced.errors import AudioFormatError

log = logging.getLogger(__name__)

MAX_CHANNELS = 32

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_EXTENSIBLE = 0xFFFE
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
"""KSDATAFORMAT_SUBTYPE_* GUIDs are the format tag followed by these 14 bytes."""
_STREAMING_SIZES = (0, 0xFFFFFFFF)
"""Data sizes that streaming writers put in the header before they know the length."""

PCM_WIDTHS = (1, 2, 3, 4)
"""Bytes per integer sample: 8-bit unsigned, 16/24/32-bit signed little-endian."""
FLOAT_WIDTHS = (4, 8)
"""Bytes per IEEE float sample."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WavAudio:
    """The audio inside a WAV file, as stored there."""

    rate: int
    """Samples per second per channel (Hz)."""
    width: int
    """Bytes per sample (1 = 8-bit unsigned, 2/3/4 = signed; 4/8 with float_format)."""
    channels: int
    """Interleaved channels per frame."""
    pcm: bytes
    """Little-endian interleaved samples, a whole number of frames."""
    float_format: bool
    """True for IEEE float samples (-1.0..1.0), False for integer PCM."""

    @property
    def frames(self) -> int:
        """Number of sample frames (samples per channel)."""
        return len(self.pcm) // (self.width * self.channels)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.rate


def check_rate(rate: int) -> None:
    """Raise AudioFormatError("rate_unsupported") unless `rate` is in SUPPORTED_RATES.

    Only these rates are accepted because each needs its own resampling filter, whose
    length grows with the rate ratio in lowest terms (see `voiced.audio.resample`).
    """
    if rate not in SUPPORTED_RATES:
        raise AudioFormatError(
            "rate_unsupported",
            f"sample rate {rate} Hz is not supported; expected one of "
            + ", ".join(str(r) for r in SUPPORTED_RATES)
            + " Hz",
        )


def check_format(rate: int, width: int, channels: int, float_format: bool) -> None:
    """Raise AudioFormatError unless voiced can convert this format: "wav_format" for the
    sample width or channel count, "rate_unsupported" for the sample rate."""
    widths = FLOAT_WIDTHS if float_format else PCM_WIDTHS
    kind = "float" if float_format else "PCM"
    if width not in widths:
        raise AudioFormatError(
            "wav_format",
            f"{kind} samples of {width * 8} bits are not supported; expected "
            + ", ".join(f"{w * 8}" for w in widths)
            + " bits",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioFormatError("wav_format", f"{channels} channels; expected 1 to {MAX_CHANNELS}")
    check_rate(rate)


def _parse_fmt(body: bytes) -> tuple[int, int, int, bool]:
    """(rate, width, channels, float_format) from the body of a fmt chunk."""
    if len(body) < 16:
        raise AudioFormatError(
            "wav_header", f"fmt chunk is {len(body)} bytes; expected at least 16"
        )
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise AudioFormatError(
                "wav_format",
                f"WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(body)} bytes; expected 40",
            )
        sub_tag, guid_tail = struct.unpack_from("<H14s", body, 24)
        if guid_tail != _GUID_TAIL or sub_tag not in (FORMAT_PCM, FORMAT_FLOAT):
            raise AudioFormatError(
                "wav_format",
                "WAVE_FORMAT_EXTENSIBLE sub-format is not PCM or IEEE float",
            )
        tag = sub_tag
    if tag not in (FORMAT_PCM, FORMAT_FLOAT):
        raise AudioFormatError(
            "wav_format",
            f"codec 0x{tag:04x}; expected PCM (1), IEEE float (3) or "
            "WAVE_FORMAT_EXTENSIBLE holding one of them",
        )
    # bits may be a valid-bits count inside a wider container (e.g. 20 in 24)
    width = (bits + 7) // 8
    if channels and block_align and block_align != width * channels:
        if block_align % channels == 0 and block_align // channels in PCM_WIDTHS:
            width = block_align // channels
        log.debug("fmt block_align %d disagrees with %d bits x %d", block_align, bits, channels)
    float_format = tag == FORMAT_FLOAT
    check_format(rate, width, channels, float_format)
    return rate, width, channels, float_format


def parse_wav(data: bytes, max_bytes: int | None = MAX_AUDIO_PAYLOAD) -> WavAudio:
    """Parse a RIFF/WAVE file held in memory.

    Chunks may come in any order and odd-sized chunks are padded. A data size of 0 or
    0xFFFFFFFF (written by streaming writers) means "to the end of the file"; a data
    chunk cut short by less than one frame is trimmed to whole frames. `max_bytes`
    bounds the payload (None: no bound, for files on disk).

    Raises AudioFormatError with code payload_too_large, wav_header, wav_truncated,
    wav_format or rate_unsupported.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioFormatError(
            "payload_too_large", f"{len(data)} bytes; expected at most {max_bytes}"
        )
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise AudioFormatError(
            "wav_header", f"starts with {data[:12]!r}; expected a RIFF....WAVE header"
        )
    fmt: tuple[int, int, int, bool] | None = None
    pcm_start = pcm_declared = -1
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body_start = pos + 8
        if chunk_id == b"data" and pcm_start < 0:
            pcm_start = body_start
            pcm_declared = -1 if size in _STREAMING_SIZES else size
            if pcm_declared < 0 or body_start + size >= len(data):
                break  # nothing useful can follow audio that runs to the end
        elif chunk_id == b"fmt " and fmt is None:
            if body_start + size > len(data):
                raise AudioFormatError(
                    "wav_truncated",
                    f"fmt chunk declares {size} bytes but only {len(data) - body_start} remain",
                )
            fmt = _parse_fmt(data[body_start : body_start + size])
        pos = body_start + size + (size & 1)
    if fmt is None:
        if pos > len(data) or (pos < len(data) and b"fmt ".startswith(data[pos : pos + 4])):
            raise AudioFormatError("wav_truncated", "file ends before the fmt chunk is complete")
        raise AudioFormatError("wav_header", "no fmt chunk; expected one before the end")
    if pcm_start < 0:
        if pos > len(data):
            raise AudioFormatError("wav_truncated", "file ends inside a chunk, before data")
        raise AudioFormatError("wav_header", "no data chunk; expected one after fmt")
    rate, width, channels, float_format = fmt
    frame = width * channels
    end = len(data) if pcm_declared < 0 else min(len(data), pcm_start + pcm_declared)
    available = end - pcm_start
    if pcm_declared >= 0 and pcm_declared - available >= frame:
        raise AudioFormatError(
            "wav_truncated",
            f"data chunk declares {pcm_declared} bytes but only {available} are present",
        )
    available -= available % frame
    pcm = data[pcm_start : pcm_start + available]
    return WavAudio(rate, width, channels, pcm, float_format)


def build_wav(
    pcm: bytes, rate: int = SAMPLE_RATE, width: int = SAMPLE_WIDTH, channels: int = CHANNELS
) -> bytes:
    """A complete PCM WAV file (44-byte header) around `pcm` (integer samples)."""
    check_format(rate, width, channels, False)
    if len(pcm) % (width * channels):
        raise AudioFormatError(
            "wav_format",
            f"{len(pcm)} bytes of PCM; expected a multiple of {width * channels} "
            f"({width}-byte samples x {channels} channels)",
        )
    pad = b"\x00" if len(pcm) & 1 else b""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm) + len(pad),
        b"WAVE",
        b"fmt ",
        16,
        FORMAT_PCM,
        channels,
        rate,
        rate * width * channels,
        width * channels,
        width * 8,
        b"data",
        len(pcm),
    )
    return header + pcm + pad


def to_float(pcm: bytes, width: int, channels: int, float_format: bool = False) -> FloatArray:
    """Samples as float64 on the int16 scale (-32768..32767), downmixed to mono."""
    if float_format:
        samples = np.frombuffer(pcm, dtype="<f4" if width == 4 else "<f8").astype(np.float64)
        # NaN would poison a resampler's history for the rest of the stream
        samples = np.nan_to_num(samples * 32768.0, nan=0.0, posinf=32767.0, neginf=-32768.0)
    elif width == 1:
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    elif width == 2:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    elif width == 3:
        raw = np.frombuffer(pcm, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value & 0x800000, value - 0x1000000, value)
        samples = value.astype(np.float64) / 256.0
    elif width == 4:
        samples = np.frombuffer(pcm, dtype="<i4").astype(np.float64) / 65536.0
    else:
        raise AudioFormatError("wav_format", f"{width}-byte samples; expected 1 to 4")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def to_int16(samples: FloatArray) -> bytes:
    """Round and clip float samples on the int16 scale to 16-bit little-endian PCM (NaN
    becomes 0, infinities the extremes)."""
    finite = np.nan_to_num(samples, nan=0.0, posinf=32767.0, neginf=-32768.0)
    return np.clip(np.rint(finite), -32768, 32767).astype("<i2").tobytes()


class StreamConverter:
    """Converts one stream (one satellite) to the internal format, keeping state.

    Carries the resampler's filter history and any partial frame between calls, so
    chunks concatenate without clicks. A change of format starts a fresh stream.
    """

    def __init__(self) -> None:
        self._format: tuple[int, int, int, bool] | None = None
        self._resampler: StreamResampler | None = None
        self._partial = b""

    def convert(
        self, pcm: bytes, rate: int, width: int, channels: int, float_format: bool = False
    ) -> bytes:
        """Convert the next chunk of the stream; returns 16 kHz, 16-bit mono PCM."""
        fmt = (rate, width, channels, float_format)
        if fmt != self._format:
            check_format(rate, width, channels, float_format)
            if self._format is not None:
                log.debug("stream format changed from %s to %s", self._format, fmt)
            self.reset()
            self._format = fmt
            if rate != SAMPLE_RATE:
                self._resampler = StreamResampler(rate, SAMPLE_RATE)
        frame = width * channels
        if self._partial:
            pcm = self._partial + pcm
        whole = len(pcm) - len(pcm) % frame
        self._partial = pcm[whole:]
        if whole != len(pcm):
            pcm = pcm[:whole]
        if self._resampler is None and fmt == (SAMPLE_RATE, SAMPLE_WIDTH, CHANNELS, False):
            return pcm
        samples = to_float(pcm, width, channels, float_format)
        if self._resampler is not None:
            samples = self._resampler.process(samples)
        return to_int16(samples)

    def convert_wav(self, data: bytes) -> bytes:
        """Parse one WAV payload (a Hermes audioFrame) and convert it as the next chunk."""
        wav = parse_wav(data)
        return self.convert(wav.pcm, wav.rate, wav.width, wav.channels, wav.float_format)

    def flush(self) -> bytes:
        """The audio still inside the resampler at the end of a stream; then reset."""
        tail = b""
        if self._resampler is not None:
            tail = to_int16(self._resampler.flush())
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget the stream (format, filter history, partial frame)."""
        self._format = None
        self._resampler = None
        self._partial = b""


def convert_wav(data: bytes, max_bytes: int | None = MAX_AUDIO_PAYLOAD) -> bytes:
    """A whole WAV file in memory as internal-format PCM (16 kHz, 16-bit, mono)."""
    wav = parse_wav(data, max_bytes=max_bytes)
    converter = StreamConverter()
    pcm = converter.convert(wav.pcm, wav.rate, wav.width, wav.channels, wav.float_format)
    return pcm + converter.flush()


def read_wav_file(path: Path | str) -> bytes:
    """Internal-format PCM from any supported WAV file on disk (no size limit)."""
    return convert_wav(Path(path).read_bytes(), max_bytes=None)


def write_wav_file(path: Path | str, pcm: bytes) -> None:
    """Write internal-format PCM as a WAV file."""
    Path(path).write_bytes(build_wav(pcm))
