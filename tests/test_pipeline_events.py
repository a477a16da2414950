"""The middle of voiced without a broker: utterance runs, the event seam, the plugin host.

A scripted recognizer (tests/fakes.py) hears a chosen sentence; everything after it is
real: the intent catalog from config/intents, the pipeline and its runs, the event sink,
the router and plugin host with test plugins, the Hermes bridge translating events.
Each test asserts the sequence of events one utterance produces, and that it ends once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fakes import (
    CrashingPlugin,
    EchoPlugin,
    FakeSpeakers,
    FakeTranscriber,
    RecordingPublish,
    RecordingSubscriber,
    SleepyPlugin,
    utterance,
)
from support import REPO

from voiced.asr.service import AsrService
from voiced.config import Config
from voiced.errors import AsrError
from voiced.events import EventSink
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine
from voiced.intents.api import PluginContext
from voiced.intents.catalog import load_catalog
from voiced.intents.plugins import PluginHost
from voiced.intents.router import Router
from voiced.models import EventType, Outcome, SpeakerMatch, Transcript
from voiced.pipeline import Pipeline
from voiced.transport.outputs import HermesBridge

PLUGINS: dict[str, Callable[[], type[Any]]] = {
    "echo": lambda: EchoPlugin, "sleepy": lambda: SleepyPlugin,
    "crashing": lambda: CrashingPlugin}


def _config(tmp_path: Path, handlers: list[dict[str, Any]], **extra: Any) -> Config:
    return Config.model_validate({
        "state_dir": str(tmp_path / "state"),
        "intents": {"paths": [str(REPO / "config" / "intents")]},
        "sites": {"overrides": {"kitchen": {"area": "kitchen"}}},
        "handlers": handlers, **extra})


@asynccontextmanager
async def pipeline(tmp_path: Path, transcriber: FakeTranscriber,
                   handlers: list[dict[str, Any]] | None = None, speakers: Any = None,
                   **extra: Any) -> AsyncIterator[tuple[Pipeline, RecordingSubscriber,
                                                        RecordingPublish]]:
    """A real pipeline around a scripted recognizer; events recorded and bridged."""
    config = _config(tmp_path, handlers if handlers is not None else
                     [{"intent": "HassTurnOn", "plugin": "echo"}], **extra)
    engine = InferenceEngine(4)
    recognizer = load_catalog(config)
    sink = EventSink()
    recorder = RecordingSubscriber()
    sink.subscribe(recorder)
    wire = RecordingPublish()
    sink.subscribe(HermesBridge(wire))
    host = PluginHost(PluginContext(publish=wire, state_dir=tmp_path), PLUGINS)

    def slots(intent: str) -> set[str] | None:
        return recognizer.slot_names(intent) if intent in recognizer.intent_names() else None

    router = Router(config.handlers, host.context, slots, host=host)
    await router.start()
    p = Pipeline(config, engine, AsrService(transcriber, engine), recognizer, router, sink,
                 speakers)
    try:
        yield p, recorder, wire
    finally:
        await host.stop()
        engine.close()


def heard(text: str, confidence: float = 0.9, is_speech: bool = True) -> FakeTranscriber:
    return FakeTranscriber(Transcript(text, confidence, "en", is_speech=is_speech))


def _streamed(p: Pipeline, transcriber: FakeTranscriber) -> StreamingFeed[Any]:
    """The ASR feed a site worker would have fed while the person spoke."""
    feed: StreamingFeed[Any] = StreamingFeed(p.engine, transcriber.start_stream)
    feed.push(b"\x00\x01" * 3200)
    return feed


def _ended(recorder: RecordingSubscriber) -> list[str]:
    return [e.data["reason"] for e in recorder.of(EventType.SESSION_ENDED)]


async def test_recognized_command(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights")
    async with pipeline(tmp_path, asr) as (p, rec, wire):
        result = await p.process(utterance(), _streamed(p, asr))
    assert rec.types() == ["transcript", "intent", "handled", "say", "outcome",
                           "session_ended"]
    assert result.outcome == Outcome.HANDLED and result.intent.name == "HassTurnOn"
    assert _ended(rec) == ["nominal"]
    outcome = rec.of(EventType.OUTCOME)[0]
    assert outcome.data["outcome"] == "handled" and outcome.result is not None
    assert rec.of(EventType.SAY)[0].data["text"] == "done: HassTurnOn"
    assert set(rec.of(EventType.INTENT)[0].timings_ms) >= {"vad", "asr", "nlu", "processing"}
    assert wire.topics() == ["hermes/asr/textCaptured", "hermes/nlu/intentParsed",
                             "hermes/intent/HassTurnOn",
                             "hermes/dialogueManager/sessionEnded"]
    # the stream was finished, never leaked
    assert asr.open_streams == 0 and all(s.finished for s in asr.streams)


async def test_not_recognized(tmp_path: Path) -> None:
    asr = heard("what is the weather like on mars")
    async with pipeline(tmp_path, asr) as (p, rec, wire):
        result = await p.process(utterance(), _streamed(p, asr))
    assert rec.types() == ["transcript", "not_recognized", "outcome", "session_ended"]
    assert rec.of(EventType.NOT_RECOGNIZED)[0].data["reason"] == "no_match"
    assert result.outcome == Outcome.NOT_RECOGNIZED
    assert _ended(rec) == ["intentNotRecognized"]
    not_recognized = dict(wire.messages)["hermes/nlu/intentNotRecognized"]
    assert not_recognized["input"] == "what is the weather like on mars"


async def test_not_speech(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights", is_speech=False)
    async with pipeline(tmp_path, asr) as (p, rec, wire):
        result = await p.process(utterance(), None)
    assert rec.types() == ["transcript", "not_recognized", "outcome", "session_ended"]
    assert rec.of(EventType.NOT_RECOGNIZED)[0].data["reason"] == "not_speech"
    assert result.outcome == Outcome.NOT_SPEECH
    # Hermes hears nothing; the event and the history keep what was decoded
    assert dict(wire.messages)["hermes/asr/textCaptured"]["text"] == ""
    assert dict(wire.messages)["hermes/nlu/intentNotRecognized"]["input"] == ""
    assert rec.of(EventType.OUTCOME)[0].transcript.text == "turn on the kitchen lights"


async def test_refused_for_this_speaker(tmp_path: Path) -> None:
    asr = heard("unlock the front door")
    mallory = FakeSpeakers(SpeakerMatch("mallory", 0.9))
    async with pipeline(tmp_path, asr, [{"intent": "UnlockDoor", "plugin": "echo"}],
                        speakers=mallory) as (p, rec, wire):
        result = await p.process(utterance(), None)
    assert rec.types() == ["transcript", "speaker", "handled", "say", "outcome",
                           "session_ended"]
    assert result.outcome == Outcome.REFUSED and result.intent.name == "UnlockDoor"
    assert rec.of(EventType.HANDLED)[0].data["code"] == "speaker_not_allowed"
    assert _ended(rec) == ["abortedByUser"]
    assert "hermes/nlu/intentNotRecognized" in wire.topics()
    assert not any(t.startswith("hermes/intent/") for t in wire.topics())
    assert not [r for r in EchoPlugin.requests if r.intent.name == "UnlockDoor"]


async def test_asr_error_ends_the_session_once(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights")
    asr.fail_with = AsrError("asr_worker_died", "the decoder process died")
    async with pipeline(tmp_path, asr) as (p, rec, wire):
        result = await p.process(utterance(), None)
    assert rec.types() == ["error", "outcome", "session_ended"]
    assert rec.of(EventType.ERROR)[0].data["code"] == "asr_worker_died"
    assert result.outcome == Outcome.ERROR
    assert _ended(rec) == ["error"]
    assert "hermes/error/asr" in wire.topics()


async def test_handler_timeout(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights")
    handlers = [{"intent": "HassTurnOn", "plugin": "sleepy", "timeout_s": 0.2}]
    async with pipeline(tmp_path, asr, handlers) as (p, rec, _wire):
        result = await p.process(utterance(), None)
    assert rec.types() == ["transcript", "intent", "handled", "error", "outcome",
                           "session_ended"]
    assert result.outcome == Outcome.TIMEOUT
    assert rec.of(EventType.ERROR)[0].data["code"] == "handler_timeout"
    assert _ended(rec) == ["error"]


async def test_handler_exception(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights")
    async with pipeline(tmp_path, asr, [{"intent": "HassTurnOn", "plugin": "crashing"}]) \
            as (p, rec, _wire):
        result = await p.process(utterance(), None)
    assert result.outcome == Outcome.ERROR
    handled = rec.of(EventType.HANDLED)[0]
    assert handled.data["code"] == "handler_crashed"
    assert "the device caught fire" in handled.data["error"]
    assert _ended(rec) == ["error"]
    assert rec.types()[-2:] == ["outcome", "session_ended"]


async def test_stop_mid_utterance_ends_it_and_closes_the_stream(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights", )
    asr.gate = threading.Event()  # the recognizer hangs until released
    async with pipeline(tmp_path, asr) as (p, rec, _wire):
        feed = _streamed(p, asr)
        await p.submit(utterance(), feed, None)
        # wait until the run is stuck in the recognizer
        async with asyncio.timeout(10):
            while not asr.heard:
                await asyncio.sleep(0.01)
        drained = asyncio.create_task(p.drain(0.1))
        await rec.wait_for(EventType.SESSION_ENDED)
        asr.gate.set()
        assert await drained == 1
    assert rec.types() == ["outcome", "session_ended"]
    assert rec.of(EventType.OUTCOME)[0].data["detail"].startswith("cancelled")
    assert _ended(rec) == ["error"]
    assert asr.open_streams == 0


async def test_text_enters_after_asr(tmp_path: Path) -> None:
    """The text entry point: the same events, handlers and history as speech."""
    async with pipeline(tmp_path, heard("unused")) as (p, rec, wire):
        result = await p.handle_text("turn on the kitchen lights", site="kitchen")
    assert result.outcome == Outcome.HANDLED and result.intent.slot_values()["area"] == \
        "kitchen"
    assert rec.types() == ["session_started", "transcript", "intent", "handled", "say",
                           "outcome", "session_ended"]
    assert "vad" not in rec.of(EventType.INTENT)[0].timings_ms
    assert wire.topics()[0] == "hermes/dialogueManager/sessionStarted"


async def test_too_many_in_flight_are_refused(tmp_path: Path) -> None:
    asr = heard("turn on the kitchen lights")
    asr.gate = threading.Event()
    async with pipeline(tmp_path, asr, max_utterances_in_flight=1) as (p, rec, _wire):
        await p.submit(utterance(session_id="first"), None, None)
        await p.submit(utterance(session_id="second"), None, None)
        error = rec.of(EventType.ERROR)[0]
        assert error.data["code"] == "overloaded" and error.session_id == "second"
        assert p.rejected == 1
        asr.gate.set()
        await rec.wait_for(EventType.SESSION_ENDED, 2)
        await p.drain(5)
    ended = {e.session_id: e.data["reason"] for e in rec.of(EventType.SESSION_ENDED)}
    assert ended == {"first": "nominal", "second": "error"}
