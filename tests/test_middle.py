"""Site workers, supervision, the plugin host, audio out, kept audio and error limits.

Real parts throughout: webrtcvad on espeak-ng speech, espeak-ng for built-in TTS, SQLite
and FLAC for kept audio, real asyncio tasks that really crash; only the recognizer is a
scripted fake (tests/fakes.py) so the tests can count its streams.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from fakes import (
    CountingPlugin,
    EchoPlugin,
    FakeTranscriber,
    RecordingPublish,
    RecordingSubscriber,
    utterance,
)
from support import FIXTURES

from voiced import tts
from voiced.asr.service import AsrService
from voiced.audio.wav import read_wav_file
from voiced.config import HandlerConfig, HistoryConfig, SiteMode, VadConfig
from voiced.const import BYTES_PER_SECOND
from voiced.events import EventSink
from voiced.inference import InferenceEngine
from voiced.intents.api import Plugin, PluginContext
from voiced.intents.plugins import PluginHost, PluginState
from voiced.intents.router import Router
from voiced.models import EventType, IntentResult, PipelineEvent, Transcript
from voiced.recorder import HistoryWriter
from voiced.sessions import SiteWorker
from voiced.site_inbox import Audio, Control
from voiced.storage import History
from voiced.supervise import MAX_RESTARTS, Supervisor
from voiced.transport.native import INTERNAL_FORMAT
from voiced.transport.outputs import AudioOut, HermesBridge

SPEECH = read_wav_file(FIXTURES / "commands" / "cancel_timer.wav")
SILENCE = b"\x00\x00" * (BYTES_PER_SECOND // 2 // 2)  # 0.5 s


def _worker(engine: InferenceEngine, asr: FakeTranscriber, sink: EventSink,
            on_utterance: Any, mode: SiteMode = SiteMode.ALWAYS,
            queue: int = 500) -> SiteWorker:
    return SiteWorker("den", mode, VadConfig(), queue, engine, AsrService(asr, engine), sink,
                      on_utterance)


def _audio(pcm: bytes) -> list[Audio]:
    """pcm in 20 ms chunks, as a satellite sends it."""
    step = BYTES_PER_SECOND // 50
    return [Audio(pcm[i:i + step], INTERNAL_FORMAT, False) for i in range(0, len(pcm), step)]


async def _feed(worker: SiteWorker, items: list[Audio | Control]) -> None:
    for item in items:
        await worker.queue.put(item)


async def test_start_listening_mid_utterance_releases_its_streams() -> None:
    """Speech, then startListening and stopListening, 60 times: no decoder is left open
    (each cycle used to leak one, 92 MB → 785 MB per worker process). The start ends the
    utterance in progress (`stop_listening`) and hands it over, as a stop would."""
    engine = InferenceEngine(2)
    asr = FakeTranscriber(Transcript("", 0.0))
    sink = EventSink()
    recorder = RecordingSubscriber()
    sink.subscribe(recorder)

    ended: list[str] = []

    async def on_utterance(utt: Any, decode: Any, speaker: Any) -> None:
        ended.append(str(utt.end_reason))
        if decode is not None:  # what the pipeline does with the streams it is handed
            await decode.aclose()

    worker = _worker(engine, asr, sink, on_utterance)
    task = asyncio.create_task(worker.run())
    half = SPEECH[: len(SPEECH) // 2]
    try:
        for cycle in range(60):
            await _feed(worker, [*_audio(SILENCE), *_audio(half),
                                 Control("listen", session_id=f"s{cycle}"), Control("stop")])
        worker.request_shutdown()
        await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
        engine.close()
    assert len(recorder.of(EventType.SPEECH_STARTED)) == 60
    assert ended == ["stop_listening"] * 60
    assert len(asr.streams) == 60
    assert asr.open_streams == 0 and all(s.closed for s in asr.streams)
    assert worker.crashes == 0


async def test_a_crash_resets_the_site_and_the_worker_goes_on() -> None:
    engine = InferenceEngine(2)
    asr = FakeTranscriber(Transcript("", 0.0), streaming=False)
    sink = EventSink()
    recorder = RecordingSubscriber()
    sink.subscribe(recorder)
    seen: list[str] = []

    async def on_utterance(utt: Any, *_feeds: Any) -> None:
        seen.append(utt.session_id)
        if len(seen) == 1:
            raise RuntimeError("a bug in the pipeline")

    worker = _worker(engine, asr, sink, on_utterance, mode=SiteMode.WAKE)
    task = asyncio.create_task(worker.run())
    try:
        for sid in ("first", "second"):
            await _feed(worker, [Control("listen", session_id=sid), *_audio(SPEECH),
                                 *_audio(SILENCE * 2)])
        worker.request_shutdown()
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        engine.close()
    assert seen == ["first", "second"]
    assert worker.crashes == 1
    error = recorder.of(EventType.ERROR)[0]
    assert error.session_id == "first" and "a bug in the pipeline" in error.data["message"]
    ended = [(e.session_id, e.data["reason"]) for e in recorder.of(EventType.SESSION_ENDED)]
    assert ended == [("first", "error")]


async def test_shutdown_never_blocks_on_a_full_queue() -> None:
    engine = InferenceEngine(2)
    worker = _worker(engine, FakeTranscriber(Transcript("", 0.0)), EventSink(),
                     lambda *a: asyncio.sleep(0), queue=5)
    try:
        for item in _audio(SILENCE)[:5]:
            assert worker.offer(item)
        assert not worker.offer(_audio(SILENCE)[0])  # full: counted, not blocking
        worker.request_shutdown()  # returns at once although the queue is full
        assert not worker.offer(_audio(SILENCE)[0])
        await asyncio.wait_for(worker.run(), 10)  # drains what was queued, then returns
    finally:
        engine.close()
    # refused after the stop request, not counted as lost
    assert worker.queue.empty() and worker.dropped == 1


async def test_supervisor_restarts_escalates_and_notices() -> None:
    supervisor = Supervisor()
    runs: list[int] = []
    settled = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("crash")
        settled.set()
        await asyncio.sleep(60)

    supervisor.start("flaky", flaky, restart=True)
    await asyncio.wait_for(settled.wait(), 5)
    assert supervisor.failures["flaky"] == 2 and supervisor.restarts["flaky"] == 2
    assert not supervisor.fatal.is_set()

    async def link() -> None:
        raise ValueError("publish to an invalid topic")

    supervisor.start("mqtt-link", link, critical=True)
    await asyncio.wait_for(supervisor.fatal.wait(), 5)
    assert "mqtt-link" in (supervisor.fatal_reason or "")
    await supervisor.stop()

    hopeless = Supervisor()

    async def always_fails() -> None:
        raise RuntimeError("never heals")

    hopeless.start("broken", always_fails, restart=True)
    await asyncio.wait_for(hopeless.fatal.wait(), 5)
    assert hopeless.failures["broken"] == MAX_RESTARTS + 1
    await hopeless.stop()


async def test_plugin_host_survives_reloads_and_bad_entry_points(tmp_path: Path) -> None:
    class NotAPlugin:
        name = "bogus"

    class Misnamed(Plugin):
        name = "something_else"

        async def handle(self, request: Any) -> Any:
            return None

    CountingPlugin.starts = CountingPlugin.stops = 0
    host = PluginHost(PluginContext(publish=RecordingPublish(), state_dir=tmp_path),
                      {"counting": lambda: CountingPlugin, "echo": lambda: EchoPlugin,
                       "bogus": lambda: NotAPlugin, "misnamed": lambda: Misnamed})

    def table(*plugins: str) -> Router:
        handlers = [HandlerConfig(intent="HassTurnOn", plugin=p) for p in plugins]
        return Router(handlers, host.context, lambda _i: {"area", "domain", "name"}, host=host)

    first = table("counting", "bogus", "misnamed")
    await first.start()
    ok = {s.plugin: s.ok for s in first.statuses}
    assert ok == {"counting": True, "bogus": False, "misnamed": False}
    assert host.statuses["bogus"].state == PluginState.FAILED
    assert "not a Plugin" in (host.statuses["bogus"].error or "")
    assert "must match" in (host.statuses["misnamed"].error or "")
    # a reload builds a new table: the running plugin is borrowed, not restarted
    for _ in range(3):
        again = table("counting")
        await again.start()
        await host.release(again.plugins_used)
    assert (CountingPlugin.starts, CountingPlugin.stops) == (1, 0)
    # a table that no longer uses it stops it, once
    without = table("echo")
    await without.start()
    await host.release(without.plugins_used)
    assert (CountingPlugin.starts, CountingPlugin.stops) == (1, 1)
    assert host.statuses["counting"].state == PluginState.STOPPED
    await host.stop()


@pytest.mark.parametrize("builtin", [True, False])
async def test_an_answer_is_spoken_one_way_only(builtin: bool) -> None:
    """Built-in TTS → playBytes only; without it → hermes/tts/say only (never both,
    which made an external Rhasspy TTS speak every answer twice)."""
    wire = RecordingPublish()
    out = AudioOut(wire, tts if builtin else None, None)
    await out.handle(PipelineEvent(EventType.SAY, "den", "s1", {"text": "Done", "lang": "en"}))
    assert len(wire.messages) == 1
    topic, payload = wire.messages[0]
    if builtin:
        assert topic.startswith("hermes/audioServer/den/playBytes/")
        assert payload[:4] == b"RIFF" and len(payload) > 1000
    else:
        assert topic == "hermes/tts/say" and payload["text"] == "Done"


async def test_errors_are_rate_limited_per_site_and_reason() -> None:
    sink = EventSink(error_interval_s=0.3)
    wire = RecordingPublish()
    sink.subscribe(HermesBridge(wire))
    sent = [await sink.error("audioServer", "wav_header", "bad", "a"),
            await sink.error("audioServer", "wav_header", "bad again", "a"),
            await sink.error("audioServer", "wav_truncated", "other reason", "a"),
            await sink.error("audioServer", "wav_header", "other site", "b")]
    assert sent == [True, False, True, True]
    assert sink.errors_suppressed == 1
    assert [p["error"] for _, p in wire.messages] == [
        "wav_header: bad", "wav_truncated: other reason", "wav_header: other site"]
    await asyncio.sleep(0.35)  # the interval itself is what is tested here
    assert await sink.error("audioServer", "wav_header", "later", "a")


async def test_kept_audio_is_linked_and_kept_within_budget(tmp_path: Path) -> None:
    engine = InferenceEngine(2)
    history = History(tmp_path / "voiced.db")
    config = HistoryConfig(keep_audio=True, audio_max_mb=0.05)  # about 52 kB of FLAC
    writer = HistoryWriter(history, config, tmp_path, engine)
    rng = np.random.default_rng(7)
    pcms = [(rng.standard_normal(16000) * 3000).astype("<i2").tobytes() for _ in range(4)]
    try:
        for i, pcm in enumerate(pcms):
            utt = utterance(session_id=f"s{i}")
            utt = type(utt)(**{**{f: getattr(utt, f) for f in utt.__slots__}, "pcm": pcm,
                               "started_wall": time.time() - 60 + i})
            config_outcome = {"outcome": "handled", "detail": None}
            await writer.handle(PipelineEvent(
                EventType.OUTCOME, "kitchen", f"s{i}", config_outcome, utterance=utt,
                transcript=Transcript("turn on the light", 0.9),
                result=IntentResult("turn on the light", "HassTurnOn")))
        rows = sorted(history.recent(10), key=lambda r: r.started_at)
    finally:
        history.close()
        engine.close()
    assert len(rows) == 4 and writer.audio_files == 4
    kept = [r for r in rows if r.audio_path is not None]
    assert writer.audio_pruned == 4 - len(kept) > 0
    assert kept and kept[-1].session_id == "s3"  # the newest survive
    assert sum(r.audio_bytes or 0 for r in kept) <= 0.05 * 1024 * 1024
    for row in rows:
        on_disk = row.audio_path is not None and (tmp_path / row.audio_path).is_file()
        assert on_disk == (row in kept)
    samples, rate = soundfile.read(io.BytesIO((tmp_path / kept[-1].audio_path).read_bytes()),
                                   dtype="int16")
    assert rate == 16000 and samples.tobytes() == pcms[-1]
    assert oct((tmp_path / "audio").stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize("open_session", [False, True])
async def test_an_idle_site_behind_sheds_stale_silence(open_session: bool) -> None:
    """A second and more of backlog on an idle site: stale silence is dropped (counted),
    but never on a site with a session open (a command may be in it)."""
    engine = InferenceEngine(2)
    asr = FakeTranscriber(Transcript("", 0.0))
    worker = _worker(engine, asr, EventSink(), lambda *a: asyncio.sleep(0),
                     mode=SiteMode.WAKE if open_session else SiteMode.ALWAYS)
    backlog: list[Audio | Control] = [Control("listen", session_id="s")] if open_session else []
    # 3 s that arrived 2 s ago and waited: voiced is behind (a fresh burst is not shed)
    arrived = time.monotonic() - 2.0
    backlog += [Audio(a.pcm, a.fmt, False, arrived) for a in _audio(SILENCE * 6)]
    backlog += _audio(SILENCE)  # and 0.5 s that just arrived
    try:
        await _feed(worker, backlog)
        worker.request_shutdown()
        await asyncio.wait_for(worker.run(), 30)
    finally:
        engine.close()
    stale, fresh = len(_audio(SILENCE * 6)), len(_audio(SILENCE))
    if open_session:
        assert worker.shed == 0 and worker.frames == stale + fresh
    else:
        # all the stale audio but the newest 15 chunks (the pre-roll); every fresh chunk
        assert worker.shed == stale - 15 and worker.frames == 15 + fresh
    assert worker.status()["shed"] == worker.shed
