"""Streaming speaker embeddings batched across satellites (`voiced.speakers.batching`): many
streams' LSTM work as one model call, with the same identities and scores as each stream
alone and as the whole utterance (real resemblyzer on flite and festival voices)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voiced.audio.wav import read_wav_file
from voiced.config import SpeakersConfig
from voiced.const import ms_to_bytes
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine
from voiced.models import UNKNOWN_SPEAKER, SpeakerMatch
from voiced.speakers.enrollment import enroll
from voiced.speakers.frontend import Growing
from voiced.speakers.resemblyzer import CPU_THREADS, ResemblyzerEmbedder
from voiced.speakers.service import SpeakerService, SpeakerStream
from voiced.speakers.store import SpeakerStore
from voiced.speakers.streaming import ResemblyzerStream, _Partials

ENROLLED = {"awb": "flite-awb", "rms": "flite-rms", "slt": "flite-slt", "ked": "festival-ked"}
STRANGERS = ("flite-kal16", "festival-kal")


@pytest.fixture(scope="module")
def embedder() -> ResemblyzerEmbedder:
    """A resemblyzer of this module's own, so its batcher's history is only these tests'."""
    e = ResemblyzerEmbedder(device="cpu")
    e.load()
    return e


@pytest.fixture(scope="module")
def people(
    make_wavs: Any, tmp_path_factory: pytest.TempPathFactory, embedder: ResemblyzerEmbedder
) -> Iterator[tuple[SpeakerService, list[tuple[str, bytes]]]]:
    """A service with four real-speaker voices enrolled, and test commands: two per enrolled
    voice and two of Kal (never enrolled), as (expected name, PCM)."""
    store = SpeakerStore.open(tmp_path_factory.mktemp("batching-store"))
    tests: list[tuple[str, bytes]] = []
    for name, voice in ENROLLED.items():
        enrolled, test = make_wavs(voice, n_enroll=3, n_test=2)
        result = enroll(embedder, store, name, [read_wav_file(f) for f in enrolled])
        assert result.ok
        tests += [(name, read_wav_file(f)) for f in test]
    for voice in STRANGERS:
        _, test = make_wavs(voice, n_enroll=1, n_test=1)
        tests.append((UNKNOWN_SPEAKER, read_wav_file(test[0])))
    service = SpeakerService(SpeakersConfig(backend="resemblyzer", threshold=0.78), embedder,
                             store)
    service._current_matcher()  # what load() does, without loading the model again
    yield service, tests
    store.close()


def pieces(pcm: bytes, ms: int = 20) -> list[bytes]:
    n = ms_to_bytes(ms)
    return [pcm[i : i + n] for i in range(0, len(pcm), n)]


def quieter(pcm: bytes, db: float) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (-db / 20)
    return np.round(samples).astype("<i2").tobytes()


def assert_same(a: SpeakerMatch, b: SpeakerMatch, tolerance: float = 1e-4) -> None:
    assert a.name == b.name
    assert a.scores.keys() == b.scores.keys()
    for person, score in a.scores.items():
        assert b.scores[person] == pytest.approx(score, abs=tolerance), person


def test_streams_batched_across_sites_identify_as_each_alone(
    people: tuple[SpeakerService, list[tuple[str, bytes]]], embedder: ResemblyzerEmbedder
) -> None:
    service, tests = people
    batcher = embedder.batcher

    # one at a time: every model call holds one stream's windows
    alone = []
    for _, pcm in tests:
        s = service.start_stream()
        for piece in pieces(pcm):
            s.feed(piece)
        alone.append(s.finish())

    # ten satellites at once, their 20 ms frames interleaved
    batcher.history.clear()
    streams = [service.start_stream() for _ in tests]
    chunked = [pieces(pcm) for _, pcm in tests]
    for i in range(max(map(len, chunked))):
        for s, chunks in zip(streams, chunked, strict=True):
            if i < len(chunks):
                s.feed(chunks[i])
    ticks = [c for c in batcher.history if not c.urgent]
    assert max(c.streams for c in ticks) >= len(tests) // 2, ticks
    assert all(c.rows <= 192 for c in batcher.history)

    # and all of them end together: the endpoint work of every stream is one batch
    results: list[SpeakerMatch | None] = [None] * len(streams)

    def finish(i: int) -> None:
        results[i] = streams[i].finish()

    with batcher.exclusive():  # the model is busy while they all arrive
        threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(streams))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while batcher.queued < len(streams) and time.monotonic() < deadline:
            threading.Event().wait(0.005)
        assert batcher.queued == len(streams)
    for t in threads:
        t.join(timeout=60)
    urgent = [c for c in batcher.history if c.urgent]
    assert urgent and urgent[0].streams >= len(tests) // 2, urgent

    whole = service.identify_batch([pcm for _, pcm in tests])
    for (expected, _), one, batched, reference in zip(tests, alone, results, whole,
                                                      strict=True):
        assert batched is not None
        assert_same(one, batched)
        assert_same(reference, batched)
        if expected == UNKNOWN_SPEAKER:
            assert batched.name == UNKNOWN_SPEAKER  # never enrolled: never named
    named = sum(r is not None and r.name == e for (e, _), r in zip(tests, results, strict=True))
    assert named >= len(tests) - 3  # short commands may ask to be repeated, as `identify`


async def test_the_daemon_path_engine_threads_and_feeds(
    people: tuple[SpeakerService, list[tuple[str, bytes]]], embedder: ResemblyzerEmbedder
) -> None:
    """Satellites fed through `StreamingFeed` on a 16-thread engine, as the daemon does:
    ticks, rewinds of quiet audio and endpoints interleave on different threads."""
    service, tests = people
    audio = [pcm for _, pcm in tests[::2]] + [quieter(tests[1][1], 20),
                                              quieter(tests[3][1], 20)]
    engine = InferenceEngine(workers=16)
    try:
        feeds = [StreamingFeed(engine, service.start_stream, name="speaker") for _ in audio]
        chunked = [pieces(pcm, 20) for pcm in audio]
        for i in range(max(map(len, chunked))):
            for feed, chunks in zip(feeds, chunked, strict=True):
                if i < len(chunks):
                    feed.push(chunks[i])
            await asyncio.sleep(0.001)
        streamed = await asyncio.gather(*(feed.conclude() for feed in feeds))
    finally:
        engine.close()
    whole = service.identify_batch(audio, adapt=False)
    for i, (got, want) in enumerate(zip(streamed, whole, strict=True)):
        # quiet audio: its gain is known only at the end, and the stream interpolates
        assert_same(want, got, tolerance=1e-4 if i < len(audio) - 2 else 1e-3)
    for pcm in audio[-2:]:  # the quiet ones interpolate between gains: within 1e-4
        s = embedder.start_stream()
        for piece in pieces(pcm, 100):
            s.feed(piece)
        assert float(np.dot(s.finish(), embedder.embed(pcm))) > 1 - 1e-4


def test_an_abandoned_stream_is_forgotten(
    people: tuple[SpeakerService, list[tuple[str, bytes]]], embedder: ResemblyzerEmbedder
) -> None:
    service, tests = people
    stream = service.start_stream()
    assert isinstance(stream, SpeakerStream)
    stream.feed(tests[0][1][: ms_to_bytes(1500)])  # more than one tick's work
    assert embedder.batcher.offered == 1
    stream.close()  # what StreamingFeed.aclose does when a session is aborted
    assert embedder.batcher.offered == 0
    with pytest.raises(RuntimeError):
        stream.feed(b"\0\0")


def test_a_failed_model_call_fails_its_stream_not_the_batcher(
    embedder: ResemblyzerEmbedder, make_wavs: Any
) -> None:
    broken = Growing(capacity=256, shape=(39,))  # frames of the wrong width
    broken.append(np.ones((200, 39), dtype=np.float32))
    work = _Partials(embedder.encoder, None, broken)
    work.keeping = {0}
    with pytest.raises(RuntimeError):
        embedder.batcher.complete(work)
    # the batcher is free again: the next stream runs
    _, test = make_wavs("flite-awb", n_enroll=1, n_test=1)
    pcm = read_wav_file(test[0])
    s = embedder.start_stream()
    assert isinstance(s, ResemblyzerStream)
    for piece in pieces(pcm, 300):
        s.feed(piece)
    assert float(np.dot(s.finish(), embedder.embed(pcm))) > 1 - 1e-6


def test_the_model_runs_one_torch_thread_on_cpu(embedder: ResemblyzerEmbedder) -> None:
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        pytest.skip("OMP_NUM_THREADS is set: torch's thread count is left to it")
    assert torch.get_num_threads() == CPU_THREADS == 1


def test_identify_batch_is_unchanged_by_open_streams(
    people: tuple[SpeakerService, list[tuple[str, bytes]]], embedder: ResemblyzerEmbedder,
    tmp_path: Path,
) -> None:
    """Whole-utterance identification (`identify`, `verify`) does not go through the
    streams' batcher and gives the same answer while streams are open."""
    service, tests = people
    before = service.identify_batch([pcm for _, pcm in tests[:3]], adapt=False)
    open_streams = [service.start_stream() for _ in range(3)]
    for s, (_, pcm) in zip(open_streams, tests[3:6], strict=True):
        s.feed(pcm[: ms_to_bytes(1000)])
    after = service.identify_batch([pcm for _, pcm in tests[:3]], adapt=False)
    for a, b in zip(before, after, strict=True):
        assert_same(a, b, tolerance=1e-6)
    for s in open_streams:
        s.close()


async def test_the_feed_hands_a_speaker_stream_whole_blocks(
    people: tuple[SpeakerService, list[tuple[str, bytes]]],
) -> None:
    """`StreamingFeed` holds back 20 ms frames until the stream can use them (160 ms for
    resemblyzer), and hands over the rest at the end."""
    service, tests = people
    sizes: list[int] = []

    class Recording(SpeakerStream):
        def feed(self, pcm: bytes) -> None:
            sizes.append(len(pcm))
            super().feed(pcm)

    stream = Recording(service, service.embedder.start_stream())
    assert stream.feed_bytes == ResemblyzerStream.feed_bytes == ms_to_bytes(160)
    engine = InferenceEngine(workers=2)
    try:
        feed = StreamingFeed(engine, lambda: stream, name="speaker")
        pcm = tests[0][1]
        for piece in pieces(pcm, 20):
            feed.push(piece)
            await asyncio.sleep(0.002)
        match = await feed.conclude()
    finally:
        engine.close()
    assert sum(sizes) == len(pcm)
    assert all(n >= ms_to_bytes(160) for n in sizes[:-1]), sizes
    assert len(sizes) <= len(pcm) // ms_to_bytes(160) + 1
    assert_same(service.identify_batch([pcm], adapt=False)[0], match)


def test_speculative_windows_wait_while_batches_are_big(
    embedder: ResemblyzerEmbedder,
) -> None:
    """A window the utterance may still drop (it ends within 1.2 s) is advanced only while
    a tick has room; windows the utterance keeps are always advanced."""
    from voiced.speakers.batching import SPARE_ROWS, LstmBatcher

    rng = np.random.default_rng(5)

    def work() -> _Partials:
        mels = Growing(capacity=256, shape=(40,))
        mels.append(rng.random((77 + 64, 40), dtype=np.float32))  # window 77: 4 blocks
        return _Partials(embedder.encoder, None, mels)

    for streams, speculative_runs in ((1, True), (SPARE_ROWS, False)):
        batcher = LstmBatcher(embedder.encoder)
        works = [work() for _ in range(streams)]
        for w in works[1:]:
            with batcher._cond:  # queued for the tick without triggering one
                batcher._offered[id(w)] = w
        batcher.offer(works[0])  # the first offer ticks
        first = batcher.history[0]
        assert first.streams == streams and first.frames == 16
        assert first.rows == streams * (2 if speculative_runs else 1)
        for w in works:
            assert w.windows[0].certain and w.windows[0].pos > 0
            assert not w.windows[77].certain
            assert (w.windows[77].pos == 77 + 16) is speculative_runs


def test_quiet_onset_holds_the_model_work(
    embedder: ResemblyzerEmbedder, make_wavs: Any
) -> None:
    """Below -30 dBFS in the first second the gain basis still moves: no model work yet;
    loud speech is never held."""
    enrolled, _ = make_wavs("flite-awb", n_enroll=1, n_test=0)
    speech = read_wav_file(enrolled[0])[ms_to_bytes(1000) :]  # starts mid-sentence
    for audio, held in ((quieter(speech, 25), True), (speech, False)):
        s = embedder.start_stream()
        assert isinstance(s, ResemblyzerStream)
        embedder.batcher.history.clear()
        for piece in pieces(audio[: ms_to_bytes(900)]):
            s.feed(piece)
        assert (len(embedder.batcher.history) == 0) is held
        for piece in pieces(audio[ms_to_bytes(900) :]):
            s.feed(piece)
        assert len(embedder.batcher.history) > 0  # after the first second it runs
        assert float(np.dot(s.finish(), embedder.embed(audio))) > 1 - 1e-4


def test_the_streams_benchmark_runs(
    voice_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voiced bench speakers --streams N`: real satellites in real time, through the CLI."""
    import json

    from voiced.cli import main

    assert main(["-q", "bench", "speakers", "--streams", "500"]) == 2
    assert "--streams" in capsys.readouterr().err
    args = ["-q", "bench", "speakers", "--streams", "3", "--utterances", "1", "--tests", "1",
            "--audio-dir", str(voice_cache), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["satellites"] == 3 and report["utterances"] == 3
    assert report["stream_cosine_min"] > 1 - 1e-6
    assert report["cpu_ms_per_audio_s"] > 0 and report["endpoint_ms"]["p50"] > 0
    assert report["model_calls"]["while_speaking"] > 0
