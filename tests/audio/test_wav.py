"""WAV parsing/building and conversion to the internal format."""

from __future__ import annotations

import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from voiced.audio.wav import (
    StreamConverter,
    WavAudio,
    build_wav,
    convert_wav,
    parse_wav,
    read_wav_file,
    to_int16,
    write_wav_file,
)
from voiced.const import MAX_AUDIO_PAYLOAD, SAMPLE_RATE, SAMPLE_WIDTH, SUPPORTED_RATES
from voiced.errors import AudioFormatError

EXT_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    """A sine on the -1..1 scale."""
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def encode(x: np.ndarray, width: int, float_format: bool = False) -> bytes:
    """-1..1 floats as little-endian samples of `width` bytes."""
    if float_format:
        return x.astype("<f4" if width == 4 else "<f8").tobytes()
    if width == 1:
        return np.clip(np.rint(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    scale = 2 ** (8 * width - 1)
    ints = np.clip(np.rint(x * scale), -scale, scale - 1).astype(np.int64)
    if width == 3:
        raw = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return raw.tobytes()
    return ints.astype(f"<i{width}").tobytes()


def fmt_chunk(tag: int, channels: int, rate: int, width: int, extensible_sub: int = 0) -> bytes:
    """A fmt chunk; with `extensible_sub`, WAVE_FORMAT_EXTENSIBLE around that tag."""
    block = width * channels
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, width * 8)
    if extensible_sub:
        body += struct.pack("<HHI", 22, width * 8, 0) + struct.pack("<H", extensible_sub)
        body += EXT_GUID_TAIL
    return b"fmt " + struct.pack("<I", len(body)) + body


def chunk(cid: bytes, body: bytes, size: int | None = None) -> bytes:
    """A RIFF chunk with its pad byte; `size` overrides the declared size."""
    declared = len(body) if size is None else size
    return cid + struct.pack("<I", declared) + body + (b"\x00" if len(body) & 1 else b"")


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm16(n: int) -> bytes:
    return np.arange(n, dtype="<i2").tobytes()


# -- parsing ----------------------------------------------------------------------------


def test_build_and_parse_round_trip_and_stdlib_agrees(tmp_path: Path) -> None:
    pcm = pcm16(321)
    data = build_wav(pcm)
    assert parse_wav(data) == WavAudio(SAMPLE_RATE, SAMPLE_WIDTH, 1, pcm, False)
    (tmp_path / "a.wav").write_bytes(data)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (SAMPLE_RATE, 2, 1)
        assert w.readframes(1000) == pcm


def test_build_pads_odd_data_and_parse_reads_stdlib_files(tmp_path: Path) -> None:
    data = build_wav(b"\x01\x02\x03", rate=8000, width=1, channels=1)
    assert len(data) % 2 == 0
    assert parse_wav(data).pcm == b"\x01\x02\x03"
    path = tmp_path / "s.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(3)
        w.setframerate(48000)
        w.writeframes(bytes(range(60)))
    wav = parse_wav(path.read_bytes())
    assert (wav.rate, wav.width, wav.channels, wav.frames) == (48000, 3, 2, 10)
    assert wav.pcm == bytes(range(60))


@pytest.mark.parametrize(
    ("tag", "width", "channels", "ext"),
    [
        (1, 1, 1, 0),
        (1, 2, 2, 0),
        (1, 3, 1, 0),
        (1, 4, 2, 0),
        (3, 4, 1, 0),
        (3, 8, 1, 0),
        (0xFFFE, 2, 2, 1),
        (0xFFFE, 3, 1, 1),
        (0xFFFE, 4, 1, 3),
    ],
)
def test_every_format_parses(tag: int, width: int, channels: int, ext: int) -> None:
    pcm = bytes((i * 7) % 256 for i in range(width * channels * 9))
    data = riff(fmt_chunk(tag, channels, 22050, width, ext), chunk(b"data", pcm))
    wav = parse_wav(data)
    assert (wav.rate, wav.width, wav.channels, wav.pcm) == (22050, width, channels, pcm)
    assert wav.float_format == (tag == 3 or ext == 3)


def test_chunks_in_any_order_with_odd_padding() -> None:
    pcm = pcm16(50)
    data = riff(
        chunk(b"LIST", b"odd"),  # 3 bytes + pad byte
        chunk(b"data", pcm),
        chunk(b"junk", b"12345"),
        fmt_chunk(1, 1, 16000, 2),
    )
    assert parse_wav(data).pcm == pcm


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streaming_data_size_means_to_the_end(size: int) -> None:
    pcm = pcm16(77)
    head = b"RIFF" + struct.pack("<I", size) + b"WAVE" + fmt_chunk(1, 1, 16000, 2)
    data = head + b"data" + struct.pack("<I", size) + pcm
    assert parse_wav(data).pcm == pcm


def test_a_partial_last_frame_is_trimmed() -> None:
    pcm = pcm16(40)
    data = riff(fmt_chunk(1, 2, 16000, 2), chunk(b"data", pcm))  # 2 channels: 4-byte frames
    cut = data[:-2]
    assert parse_wav(cut).pcm == pcm[:-4]


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"", "wav_header", "RIFF"),
        (b"RIFX\x00\x00\x00\x00WAVE", "wav_header", "RIFF"),
        (b"RIFF\x00\x00\x00\x00AVI fmt ", "wav_header", "WAVE"),
        (riff(chunk(b"data", pcm16(4))), "wav_header", "fmt"),
        (riff(fmt_chunk(1, 1, 16000, 2)), "wav_header", "data chunk"),
        (riff(fmt_chunk(1, 1, 16000, 2))[:30], "wav_truncated", "fmt"),
        (riff(fmt_chunk(1, 1, 16000, 2), chunk(b"data", pcm16(100)))[:-10], "wav_truncated", "200"),
        (riff(fmt_chunk(2, 1, 16000, 2), chunk(b"data", b"")), "wav_format", "PCM (1)"),
        (riff(fmt_chunk(1, 1, 16000, 5), chunk(b"data", b"")), "wav_format", "16, 24, 32"),
        (riff(fmt_chunk(3, 1, 16000, 2), chunk(b"data", b"")), "wav_format", "float"),
        (riff(fmt_chunk(1, 0, 16000, 2), chunk(b"data", b"")), "wav_format", "channels"),
        (riff(fmt_chunk(1, 1, 3999, 2), chunk(b"data", b"")), "rate_unsupported", "3999 Hz"),
        (riff(fmt_chunk(1, 1, 192001, 2), chunk(b"data", b"")), "rate_unsupported", "44100"),
        (riff(fmt_chunk(0xFFFE, 1, 16000, 2, 2), chunk(b"data", b"")), "wav_format", "sub-format"),
    ],
)
def test_broken_files_raise_with_code(data: bytes, code: str, says: str) -> None:
    with pytest.raises(AudioFormatError) as info:
        parse_wav(data)
    assert info.value.code == code
    assert says in info.value.message


def test_oversize_payload_is_refused_but_files_on_disk_are_not(tmp_path: Path) -> None:
    big = build_wav(bytes(MAX_AUDIO_PAYLOAD))
    with pytest.raises(AudioFormatError) as info:
        parse_wav(big)
    assert info.value.code == "payload_too_large"
    path = tmp_path / "big.wav"
    path.write_bytes(big)
    assert len(read_wav_file(path)) == MAX_AUDIO_PAYLOAD


def test_build_refuses_partial_frames() -> None:
    with pytest.raises(AudioFormatError) as info:
        build_wav(b"\x00\x00\x00", width=2)
    assert info.value.code == "wav_format"


# -- conversion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "float_format"), [(1, False), (2, False), (3, False), (4, False), (4, True)]
)
def test_widths_and_downmix_convert_to_int16(width: int, float_format: bool) -> None:
    left = tone(500, SAMPLE_RATE, 0.05)
    right = np.zeros_like(left)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    out = StreamConverter().convert(
        encode(stereo, width, float_format), SAMPLE_RATE, width, 2, float_format
    )
    got = np.frombuffer(out, dtype="<i2").astype(np.float64)
    want = left / 2 * 32768
    tolerance = 260 if width == 1 else 1.5  # 8-bit has ~256 steps of int16 per level
    assert len(got) == len(left)
    assert np.max(np.abs(got - want)) <= tolerance


def test_float_nan_and_infinity_become_silence_and_the_extremes() -> None:
    # a satellite or an upload may send any bits as float samples; NaN used to cast to an
    # undefined int16 and, through the resampler's history, spoil the rest of the stream
    bad = np.array([np.nan, np.inf, -np.inf, 0.5], dtype="<f4").tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "invalid value encountered in cast"
        out = StreamConverter().convert(bad, SAMPLE_RATE, 4, 1, True)
        assert np.frombuffer(out, dtype="<i2").tolist() == [0, 32767, -32768, 16384]
        assert np.frombuffer(to_int16(np.array([np.nan, np.inf, -np.inf])),
                             dtype="<i2").tolist() == [0, 32767, -32768]
        resampling = StreamConverter()
        rate = 48000
        resampling.convert(np.full(480, np.nan, dtype="<f4").tobytes(), rate, 4, 1, True)
        later = resampling.convert(encode(tone(500, rate, 0.2), 4, True), rate, 4, 1, True)
    assert np.max(np.abs(np.frombuffer(later, dtype="<i2"))) > 10000  # not NaN → 0


def test_internal_format_passes_through_unchanged() -> None:
    pcm = pcm16(320)
    conv = StreamConverter()
    assert conv.convert(pcm, SAMPLE_RATE, 2, 1) == pcm
    assert conv.convert_wav(build_wav(pcm)) == pcm


def test_partial_frames_carry_to_the_next_chunk() -> None:
    pcm = pcm16(100)
    conv = StreamConverter()
    assert (
        conv.convert(pcm[:51], SAMPLE_RATE, 2, 1) + conv.convert(pcm[51:], SAMPLE_RATE, 2, 1) == pcm
    )


def peak_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [44100, 48000, 8000, 22050])
def test_streaming_resampler_is_seamless(rate: int) -> None:
    """A tone in 20 ms chunks converts exactly as the whole signal would."""
    x = tone(440, rate, 1.0)
    pcm = encode(x, 2)
    step = rate // 50 * 2  # 20 ms of 16-bit mono
    conv = StreamConverter()
    chunks = [conv.convert(pcm[i : i + step], rate, 2, 1) for i in range(0, len(pcm), step)]
    streamed = b"".join(chunks) + conv.flush()
    whole = convert_wav(build_wav(pcm, rate=rate))
    assert len(streamed) == len(whole) == SAMPLE_RATE * 2
    got = np.frombuffer(streamed, dtype="<i2").astype(np.int32)
    ref = np.frombuffer(whole, dtype="<i2").astype(np.int32)
    assert np.max(np.abs(got - ref)) <= 1  # rounding only
    assert abs(peak_hz(streamed) - 440) <= 2
    # no clicks: the biggest step between samples is what a clean 440 Hz sine allows
    independent = np.rint(resample_poly(np.frombuffer(pcm, "<i2").astype(float), SAMPLE_RATE, rate))
    assert np.max(np.abs(np.diff(got[100:-100]))) <= np.max(np.abs(np.diff(independent))) + 2
    # and it matches an independent resampler away from the edges
    assert np.max(np.abs(got[100:-100] - independent[100:-100])) <= 1


def test_naive_per_chunk_resampling_would_click() -> None:
    """The seamless test above can fail: chunk-by-chunk filtering does click."""
    x = np.frombuffer(encode(tone(440, 44100, 0.5), 2), "<i2").astype(float)
    naive = np.concatenate([resample_poly(x[i : i + 882], 160, 441) for i in range(0, len(x), 882)])
    smooth_step = np.max(np.abs(np.diff(resample_poly(x, 160, 441)[100:-100])))
    assert np.max(np.abs(np.diff(naive[100:-100]))) > 2 * smooth_step


def test_format_change_resets_the_stream() -> None:
    conv = StreamConverter()
    conv.convert(encode(tone(440, 48000, 0.1), 2), 48000, 2, 1)
    fresh = StreamConverter()
    chunk_8k = encode(tone(440, 8000, 0.1), 2)
    assert conv.convert(chunk_8k, 8000, 2, 1) == fresh.convert(chunk_8k, 8000, 2, 1)


def test_convert_refuses_unsupported_formats() -> None:
    with pytest.raises(AudioFormatError) as info:
        StreamConverter().convert(b"\x00" * 4, 16000, 2, 0)
    assert info.value.code == "wav_format"


def test_wav_files_round_trip_on_disk(tmp_path: Path) -> None:
    pcm = encode(tone(300, SAMPLE_RATE, 0.2), 2)
    write_wav_file(tmp_path / "x.wav", pcm)
    assert read_wav_file(tmp_path / "x.wav") == pcm
    stereo_44k = np.repeat(tone(300, 44100, 0.2)[:, None], 2, axis=1).reshape(-1)
    (tmp_path / "y.wav").write_bytes(build_wav(encode(stereo_44k, 2), 44100, 2, 2))
    converted = read_wav_file(tmp_path / "y.wav")
    assert len(converted) == len(pcm)
    assert abs(peak_hz(converted) - 300) <= 5


# -- sample rates: a bounded set, each with a cheap cached filter ------------------------


def test_a_44_byte_wav_at_an_odd_rate_is_refused_before_any_filter_is_built() -> None:
    """Regression: 191999 Hz was accepted and needed a 3.8-million-tap filter."""
    data = riff(fmt_chunk(1, 1, 191_999, 2), chunk(b"data", pcm16(2)))
    assert len(data) == 48
    with pytest.raises(AudioFormatError) as info:
        parse_wav(data)
    assert info.value.code == "rate_unsupported"
    assert "191999 Hz" in info.value.message
    assert all(str(rate) in info.value.message for rate in SUPPORTED_RATES)
    with pytest.raises(AudioFormatError) as info:
        StreamConverter().convert(pcm16(2), 191_999, 2, 1)
    assert info.value.code == "rate_unsupported"


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_every_supported_rate_converts(rate: int) -> None:
    pcm = encode(tone(300, rate, 0.2), 2)
    out = convert_wav(build_wav(pcm, rate=rate))
    assert abs(len(out) // SAMPLE_WIDTH - SAMPLE_RATE * 0.2) <= 1
    assert abs(peak_hz(out) - 300) <= 5
