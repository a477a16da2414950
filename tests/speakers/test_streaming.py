"""Streaming speaker embeddings: the same vector as the whole utterance, with the work done
while the audio arrives (real resemblyzer on flite and espeak-ng speech)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import webrtcvad
from resemblyzer.audio import trim_long_silences, wav_to_mel_spectrogram
from scipy.ndimage import binary_dilation

from voiced.audio.wav import read_wav_file
from voiced.const import SAMPLE_RATE, ms_to_bytes
from voiced.models import NO_SPEAKER, UNKNOWN_SPEAKER, SpeakerMatch
from voiced.speakers.base import BufferedStream, pcm_to_float
from voiced.speakers.frontend import (
    INT16_MAX,
    PAD,
    VAD_FRAME,
    Growing,
    mel_frames,
    speech_mask,
    volume_gain,
)
from voiced.speakers.resemblyzer import ResemblyzerEmbedder
from voiced.speakers.service import ServiceOptions, SpeakerService
from voiced.speakers.speechbrain import SpeechbrainEmbedder
from voiced.speakers.streaming import ResemblyzerStream

Wavs = Callable[..., tuple[list[Path], list[Path]]]

VOICES = ("flite-awb", "flite-slt", "espeak-en-us+f1", "espeak-en-gb+m2")


@pytest.fixture(scope="module")
def utterances(make_wavs: Wavs) -> list[bytes]:
    """Per voice one enrollment sentence (3.5-5 s, 2-4 windows) and one command (1.5-2.5 s)."""
    out = []
    for voice in VOICES:
        enroll, test = make_wavs(voice, n_enroll=1, n_test=1)
        out += [read_wav_file(enroll[0]), read_wav_file(test[0])]
    return out


def chunks(pcm: bytes, mode: str, seed: int = 0) -> Iterator[bytes]:
    """`pcm` cut into 20 ms, 300 ms, or random 20..300 ms pieces split mid-sample."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(pcm):
        if mode == "random":
            n = ms_to_bytes(int(rng.integers(20, 301))) + int(rng.integers(0, 2))
        else:
            n = ms_to_bytes(int(mode))
        yield pcm[i : i + n]
        i += n


def stream(embedder: ResemblyzerEmbedder, pcm: bytes, mode: str = "20") -> ResemblyzerStream:
    s = embedder.start_stream()
    assert isinstance(s, ResemblyzerStream)
    for piece in chunks(pcm, mode):
        s.feed(piece)
    return s


def quieter(pcm: bytes, db: float) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (-db / 20)
    return np.round(samples).astype("<i2").tobytes()


# the pure steps against resemblyzer's own


def reference_mask(flags: np.ndarray) -> np.ndarray:
    """resemblyzer's `trim_long_silences` after webrtcvad, verbatim."""
    width = 8
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    ret = np.cumsum(padded, dtype=float)
    ret[width:] = ret[width:] - ret[:-width]
    mask = np.round(ret[width - 1 :] / width).astype(bool)
    return np.asarray(binary_dilation(mask, np.ones(7)))


def test_speech_mask_is_resemblyzers() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 5, 9, 40, 300):
        for p in (0.2, 0.5, 0.62, 0.8):
            flags = (rng.random(n) < p).astype(np.int8)
            assert np.array_equal(speech_mask(flags), reference_mask(flags)), (n, p)


def test_trim_and_mel_are_resemblyzers(utterances: list[bytes]) -> None:
    for pcm in utterances[:4]:
        wav = pcm_to_float(pcm)
        usable = len(wav) - len(wav) % VAD_FRAME
        ints = np.round(wav[:usable] * INT16_MAX).astype(np.int16)
        vad = webrtcvad.Vad(3)
        flags = np.array([vad.is_speech(ints[i : i + VAD_FRAME].tobytes(), SAMPLE_RATE)
                          for i in range(0, usable, VAD_FRAME)], dtype=np.int8)
        trimmed = wav[:usable][np.repeat(speech_mask(flags), VAD_FRAME)]
        assert np.array_equal(trimmed, trim_long_silences(wav))

        buffer = Growing()
        buffer.append(np.zeros(PAD, dtype=np.float32))
        buffer.append(trimmed)
        expected = wav_to_mel_spectrogram(trimmed)
        got = mel_frames(buffer, 0, len(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(mel_frames(buffer, 37, 90), expected[37:90],
                                   rtol=1e-3, atol=1e-6)


def test_volume_gain_is_resemblyzers() -> None:
    from resemblyzer.audio import normalize_volume

    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(SAMPLE_RATE) * 0.003).astype(np.float32)
    gain = volume_gain(quiet)
    assert gain is not None and gain > 1
    assert np.array_equal(quiet * gain, normalize_volume(quiet, -30, increase_only=True))
    assert volume_gain(quiet * 100) is None  # louder than -30 dBFS: left alone
    assert volume_gain(np.zeros(100, dtype=np.float32)) is None


# the stream against the whole utterance


@pytest.mark.parametrize("mode", ["20", "300", "random"])
def test_stream_equals_the_whole_utterance(
    resemblyzer_embedder: ResemblyzerEmbedder, utterances: list[bytes], mode: str
) -> None:
    for pcm in utterances:
        whole = resemblyzer_embedder.embed(pcm)
        s = stream(resemblyzer_embedder, pcm, mode)
        vector = s.finish()
        assert s.exact
        assert float(np.dot(whole, vector)) > 1 - 1e-6
        assert np.allclose(whole, vector, atol=1e-4)


def test_finish_leaves_only_the_last_window(
    resemblyzer_embedder: ResemblyzerEmbedder, utterances: list[bytes]
) -> None:
    long_ones = utterances[0::2]  # enrollment sentences: 3.5-5 s, several windows
    for pcm in long_ones:
        s = stream(resemblyzer_embedder, pcm)
        s.finish()
        windows = len(s._partials.done)
        assert windows >= 2
        # the whole utterance runs 160 steps per window; finish only the end of the last
        assert s.finish_steps <= 100, s.finish_steps
    for pcm in utterances[1::2]:
        s = stream(resemblyzer_embedder, pcm)
        s.finish()
        assert s.finish_steps < 160


def test_quiet_audio_interpolates_between_gains(
    resemblyzer_embedder: ResemblyzerEmbedder, utterances: list[bytes]
) -> None:
    """Below -30 dBFS the gain depends on the whole utterance; the stream interpolates."""
    for db, pcm in [(20, u) for u in utterances[:4]] + [(40, utterances[5])]:
        quiet = quieter(pcm, db)
        whole = resemblyzer_embedder.embed(quiet)
        s = stream(resemblyzer_embedder, quiet, "random")
        vector = s.finish()
        assert not s.exact
        assert float(np.dot(whole, vector)) > 1 - 1e-4
        assert s.lstm_redone <= 20


def test_edge_cases_match_embed(resemblyzer_embedder: ResemblyzerEmbedder,
                                utterances: list[bytes]) -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(SAMPLE_RATE // 2) * 300).astype("<i2").tobytes()
    cases = {
        "empty": b"",
        "odd byte": b"\x01",
        "silence": bytes(ms_to_bytes(1200)),
        "noise": noise,  # too little speech after trimming: the untrimmed audio is used
        "short": utterances[1][: ms_to_bytes(400)],
    }
    for name, pcm in cases.items():
        s = resemblyzer_embedder.start_stream()
        for piece in chunks(pcm, "20"):
            s.feed(piece)
        got, want = s.finish(), resemblyzer_embedder.embed(pcm)
        assert np.allclose(got, want, atol=1e-5, equal_nan=True), name


def test_a_stream_is_used_once(resemblyzer_embedder: ResemblyzerEmbedder) -> None:
    s = resemblyzer_embedder.start_stream()
    s.feed(bytes(ms_to_bytes(100)))
    s.finish()
    with pytest.raises(RuntimeError):
        s.feed(b"\0\0")
    with pytest.raises(RuntimeError):
        s.finish()


def test_backends_without_streaming_buffer(
    resemblyzer_embedder: ResemblyzerEmbedder, utterances: list[bytes], tmp_path: Path
) -> None:
    sb = SpeechbrainEmbedder(model=str(tmp_path), state_dir=tmp_path)
    assert not sb.supports_streaming and isinstance(sb.start_stream(), BufferedStream)
    assert resemblyzer_embedder.supports_streaming
    buffered = BufferedStream(resemblyzer_embedder)
    for piece in chunks(utterances[1], "random"):
        buffered.feed(piece)
    assert np.array_equal(buffered.finish(), resemblyzer_embedder.embed(utterances[1]))


# the service, as the daemon uses it


@pytest.fixture
async def service(
    make_service: Callable[[ServiceOptions], Awaitable[SpeakerService]],
) -> SpeakerService:
    return await make_service(ServiceOptions(batch_window_ms=10))


async def run_stream(service: SpeakerService, pcm: bytes) -> SpeakerMatch:
    engine = service._engine
    assert engine is not None
    s = service.start_stream()
    for piece in chunks(pcm, "20"):
        await engine.run(s.feed, piece)
    return await engine.run(s.finish)


async def test_service_stream_identifies_like_identify(
    service: SpeakerService, make_wavs: Wavs
) -> None:
    awb_enroll, awb_test = make_wavs("flite-awb", n_enroll=3, n_test=1)
    rms_enroll, _ = make_wavs("flite-rms", n_enroll=3, n_test=1)
    _, slt_test = make_wavs("flite-slt", n_enroll=3, n_test=1)

    # nobody enrolled when the utterance starts: the stream only keeps the audio, and
    # still identifies when someone enrolls before it ends
    pending = service.start_stream()
    assert pending._embedding is None
    pcm = read_wav_file(awb_test[0])
    pending.feed(pcm)
    for name, files in (("awb", awb_enroll), ("rms", rms_enroll)):
        assert (await service.enroll(name, [read_wav_file(f) for f in files])).ok
    assert pending.finish().name == "awb"

    for f, who in ((awb_test[0], "awb"), (slt_test[0], UNKNOWN_SPEAKER)):
        pcm = read_wav_file(f)
        streamed = await run_stream(service, pcm)
        whole = await service.identify(pcm)
        assert streamed.name == whole.name == who
        for person, score in whole.scores.items():
            assert streamed.scores[person] == pytest.approx(score, abs=1e-5)

    assert await run_stream(service, pcm[: ms_to_bytes(250)]) == NO_SPEAKER


def test_bench_times_both_paths(
    resemblyzer_embedder: ResemblyzerEmbedder, utterances: list[bytes]
) -> None:
    from voiced.bench.speakers import Timings, _time_utterance

    timings = Timings()
    for pcm in utterances[1:4:2]:
        whole = _time_utterance(resemblyzer_embedder, pcm, timings)
        assert np.array_equal(whole, resemblyzer_embedder.embed(pcm))
    report = timings.report()
    assert report["stream_cosine_min"] > 1 - 1e-6
    assert report["quiet_stream_cosine_min"] > 1 - 1e-4
    assert 0 < report["finish_steps_mean"] < 160
    assert report["endpoint_ms_median"] > 0 and report["embed_ms_median"] > 0
