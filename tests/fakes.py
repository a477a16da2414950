"""Fakes that record what they received, for fast tests of the pipeline's middle.

They stand in for the models (a recognizer that hears a scripted sentence, a speaker
service that names a scripted person), never for the thing under test: the pipeline,
utterance runs, the event sink, the router, the plugin host and the history are real.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from voiced.asr.base import AsrStream, Transcriber
from voiced.events import Subscriber
from voiced.intents.api import Plugin, Request, Response
from voiced.models import (
    NO_SPEAKER,
    EndReason,
    EventType,
    PipelineEvent,
    SpeakerMatch,
    Transcript,
    Utterance,
)


class FakeStream(AsrStream):
    """One utterance's decode: records the audio it was fed and whether it was closed."""

    def __init__(self, owner: FakeTranscriber) -> None:
        self.owner = owner
        self.fed = bytearray()
        self.closed = False
        self.finished = False

    def feed(self, pcm: bytes) -> None:
        self.fed += pcm

    def partial(self) -> str | None:
        return self.owner.script(bytes(self.fed)).text or None

    def finish(self) -> Transcript:
        self.finished = True
        self.owner.release(self)
        return self.owner.transcribe(bytes(self.fed))

    def close(self) -> None:
        self.closed = True
        self.owner.release(self)


class FakeTranscriber(Transcriber):
    """Hears whatever `script(pcm)` says; can block or fail on demand."""

    name = "fake"

    def __init__(self, script: Callable[[bytes], Transcript] | Transcript,
                 streaming: bool = True) -> None:
        self.script = script if callable(script) else (lambda _pcm, t=script: t)
        self._streaming = streaming
        self.heard: list[bytes] = []
        self.streams: list[FakeStream] = []
        self._lock = threading.Lock()
        self.open_streams = 0
        self.fail_with: Exception | None = None
        self.gate: threading.Event | None = None
        """When set, `transcribe` waits for it (a slow recognizer)."""
        self.reloads = 0

    @property
    def supports_streaming(self) -> bool:
        return self._streaming

    def start_stream(self) -> FakeStream:
        stream = FakeStream(self)
        with self._lock:
            self.streams.append(stream)
            self.open_streams += 1
        return stream

    def release(self, stream: FakeStream) -> None:
        with self._lock:
            if not getattr(stream, "_released", False):
                stream._released = True  # type: ignore[attr-defined]
                self.open_streams -= 1

    def transcribe(self, pcm: bytes) -> Transcript:
        self.heard.append(pcm)
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail_with is not None:
            raise self.fail_with
        return self.script(pcm)

    def reload(self, intents: Any) -> None:
        self.reloads += 1


class FakeSpeakers:
    """A speaker service that names one scripted person."""

    def __init__(self, match: SpeakerMatch) -> None:
        self.match = match
        self.identified: list[bytes] = []

    async def identify(self, pcm: bytes) -> SpeakerMatch:
        self.identified.append(pcm)
        return self.match

    def start_stream(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class RecordingSubscriber(Subscriber):
    """Keeps every event; `wait_for` waits (bounded) until one of a type arrives."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[PipelineEvent] = []
        self._changed = asyncio.Event()

    async def handle(self, event: PipelineEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def types(self, site: str | None = None) -> list[str]:
        return [str(e.type) for e in self.events if site is None or e.site == site]

    def of(self, kind: EventType) -> list[PipelineEvent]:
        return [e for e in self.events if e.type == kind]

    async def wait_for(self, kind: EventType, count: int = 1, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()


class RecordingPublish:
    """A `publish(topic, payload)` that keeps what it was given (the MQTT link's role)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    async def __call__(self, topic: str, payload: Any, qos: int = 0,
                       retain: bool = False) -> None:
        self.messages.append((topic, payload))

    def topics(self) -> list[str]:
        return [t for t, _ in self.messages]


class EchoPlugin(Plugin):
    """Answers with its options' text; records every request."""

    name = "echo"
    requests: list[Request] = []

    async def handle(self, request: Request) -> Response:
        type(self).requests.append(request)
        return Response(text=f"done: {request.intent.name}")


class SleepyPlugin(Plugin):
    """Never answers in time."""

    name = "sleepy"

    async def handle(self, request: Request) -> Response:
        await asyncio.sleep(60)
        return Response()


class CrashingPlugin(Plugin):
    """Raises inside handle()."""

    name = "crashing"

    async def handle(self, request: Request) -> Response:
        raise RuntimeError("the device caught fire")


class CountingPlugin(Plugin):
    """Counts its starts and stops (one instance per daemon, whatever reloads happen)."""

    name = "counting"
    starts = 0
    stops = 0

    async def start(self) -> None:
        type(self).starts += 1

    async def stop(self) -> None:
        type(self).stops += 1

    async def handle(self, request: Request) -> Response:
        return Response()


def utterance(site: str = "kitchen", session_id: str = "s1", seconds: float = 1.0,
              custom_data: str | None = None) -> Utterance:
    """An endpointed utterance of `seconds` of (silent) audio."""
    now = time.monotonic()
    pcm = b"\x01\x00" * int(16000 * seconds)
    return Utterance(site=site, session_id=session_id, pcm=pcm, end_reason=EndReason.SILENCE,
                     speech_ms=seconds * 1000, last_speech_at=now - 0.3, endpoint_at=now,
                     started_wall=time.time() - seconds, custom_data=custom_data)


NOBODY = NO_SPEAKER
