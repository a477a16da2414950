"""The satellite client: streams audio to voiced like a Raspberry Pi satellite would and
collects what voiced answered for each utterance.

Used by `voiced satellite`, the first-run demo, the latency benchmark and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from voiced.audio.wav import build_wav
from voiced.const import (
    CHANNELS,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    SATELLITE_FRAME_MS,
    VAD_FRAME_BYTES,
    ms_to_bytes,
)
from voiced.transport import native

log = logging.getLogger(__name__)

FRAME_BYTES = ms_to_bytes(SATELLITE_FRAME_MS)
ROOM_TONE_MAX = 60.0
"""Loudest trailing noise (RMS, about -55 dBFS), so it never passes for speech."""
TRAILING_SILENCE_MS = 1200
"""Silence sent after a file so the server's endpointer sees the end of speech."""

ANSWER_TOPICS = (
    "hermes/asr/textCaptured",
    "hermes/intent/#",
    "hermes/nlu/intentNotRecognized",
    "hermes/dialogueManager/sessionEnded",
    "hermes/tts/say",
    "hermes/error/#",
)


@dataclass(slots=True)
class Answer:
    """What voiced answered for one utterance."""

    text: str | None = None
    intent: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    confidence: float | None = None
    speaker: dict[str, Any] | None = None
    said: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    termination: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    session_id: str | None = None
    intent_latency_ms: float | None = None
    """From the last speech frame published to the intent (or not-recognized) message."""
    answered_at: float | None = None
    """Monotonic seconds when the intent (or not-recognized) message arrived."""

    def summary(self) -> str:
        """One human-readable line."""
        heard = f'"{self.text}"' if self.text is not None else "(nothing heard)"
        if self.intent:
            slots = ", ".join(f"{k}={v!r}" for k, v in self.slots.items())
            what = f"{self.intent}({slots})"
        else:
            what = "not recognized"
        extra = []
        if self.speaker:
            extra.append(f"speaker {self.speaker.get('name')}")
        if self.said:
            extra.append("said: " + " / ".join(self.said))
        if self.errors:
            extra.append("errors: " + "; ".join(self.errors))
        if "processing" in self.timings:
            extra.append(f"{self.timings['processing']:.0f} ms after endpoint")
        return f"{heard} → {what}" + (f" [{'; '.join(extra)}]" if extra else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


def last_speech_offset(pcm: bytes) -> int:
    """Byte offset just after the last frame webrtcvad calls speech (0 if none)."""
    from voiced.vad.webrtc import WebrtcVad

    vad = WebrtcVad(2)
    last = 0
    for start in range(0, len(pcm) - VAD_FRAME_BYTES + 1, VAD_FRAME_BYTES):
        if vad.is_speech(pcm[start : start + VAD_FRAME_BYTES]):
            last = start + VAD_FRAME_BYTES
    return last


def room_tone(pcm: bytes, ms: int) -> bytes:
    """`ms` of quiet noise at the recording's own noise floor (its quietest 20 ms frames),
    so the trailing "silence" sounds like the room (digital zeros would not)."""
    import numpy as np

    n = ms_to_bytes(ms) // 2
    samples = np.frombuffer(pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES], dtype=np.int16)
    frames = samples.astype(np.float64).reshape(-1, FRAME_BYTES // 2)
    level = float(np.percentile(np.sqrt(np.mean(frames**2, axis=1)), 10)) if frames.size else 0.0
    noise = np.random.default_rng(len(pcm)).normal(0.0, min(level, ROOM_TONE_MAX), n)
    return np.clip(np.round(noise), -32768, 32767).astype("<i2").tobytes()


class Satellite:
    """One simulated satellite on one MQTT connection."""

    def __init__(self, host: str, port: int, site: str, *, raw: bool = False,
                 client_id: str | None = None) -> None:
        self.host, self.port, self.site, self.raw = host, port, site, raw
        self._client_id = client_id
        self._client: aiomqtt.Client | None = None
        self._answers: asyncio.Queue[tuple[str, dict[str, Any], float]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.frames_sent = 0

    async def __aenter__(self) -> Satellite:
        self._client = aiomqtt.Client(self.host, self.port, identifier=self._client_id)
        await self._client.__aenter__()
        for topic in ANSWER_TOPICS:
            await self._client.subscribe(topic)
        self._reader = asyncio.create_task(self._read(), name=f"satellite-{self.site}")
        if self.raw:
            fmt = {"rate": SAMPLE_RATE, "width": SAMPLE_WIDTH, "channels": CHANNELS}
            await self._client.publish(native.format_topic(self.site), json.dumps(fmt))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            try:
                data = json.loads(message.payload)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if isinstance(data, dict) and data.get("siteId") == self.site:
                self._answers.put_nowait((message.topic.value, data, time.monotonic()))

    def encode(self, frame: bytes) -> bytes:
        """The payload for one frame (a WAV chunk, or raw PCM with `raw`)."""
        return frame if self.raw else build_wav(frame)

    @property
    def audio_topic(self) -> str:
        """Where this satellite's frames go."""
        return native.pcm_topic(self.site) if self.raw else \
            f"hermes/audioServer/{self.site}/audioFrame"

    async def send_frame(self, frame: bytes, encoded: bool = False) -> None:
        """Publish one frame."""
        assert self._client is not None
        await self._client.publish(self.audio_topic, frame if encoded else self.encode(frame))
        self.frames_sent += 1

    async def hotword(self, wakeword_id: str = "voiced") -> None:
        """Tell voiced a wake word was heard (wake-gated sites)."""
        assert self._client is not None
        await self._client.publish(f"hermes/hotword/{wakeword_id}/detected",
                                   json.dumps({"modelId": wakeword_id, "siteId": self.site}))

    async def stream(self, pcm: bytes, *, realtime: bool,
                     trailing_silence_ms: int = TRAILING_SILENCE_MS) -> float:
        """Stream `pcm` then silence in 20 ms frames; returns the monotonic time when the
        last speech frame was published."""
        speech_end = last_speech_offset(pcm)
        audio = pcm + room_tone(pcm, trailing_silence_ms)
        frames = []
        for offset in range(0, len(audio), FRAME_BYTES):
            frame = audio[offset : offset + FRAME_BYTES]
            frames.append(self.encode(frame + bytes(FRAME_BYTES - len(frame))))
        start = time.monotonic()
        last_speech_at = start
        for i, payload in enumerate(frames):
            if realtime:
                delay = start + i * SATELLITE_FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_frame(payload, encoded=True)
            if i * FRAME_BYTES < speech_end:
                last_speech_at = time.monotonic()
        return last_speech_at

    async def command(self, pcm: bytes, *, realtime: bool = False, timeout: float = 30.0,
                      hotword: bool = False) -> Answer:
        """Stream one utterance and wait until voiced ends its session."""
        while not self._answers.empty():
            self._answers.get_nowait()
        if hotword:
            await self.hotword()
        sender = asyncio.create_task(self.stream(pcm, realtime=realtime))
        answer = Answer()
        try:
            async with asyncio.timeout(timeout):
                async for topic, data, at in self._iter_answers():
                    self._take(answer, topic, data, at)
                    if topic == "hermes/dialogueManager/sessionEnded":
                        break
        finally:
            last_speech_at = await sender
        if answer.answered_at is not None:
            answer.intent_latency_ms = (answer.answered_at - last_speech_at) * 1000
        return answer

    async def _iter_answers(self) -> AsyncIterator[tuple[str, dict[str, Any], float]]:
        while True:
            yield await self._answers.get()

    async def next_answer(self) -> Answer:
        """Wait for the next session on this site to end (microphone mode)."""
        answer = Answer()
        async for topic, data, at in self._iter_answers():
            self._take(answer, topic, data, at)
            if topic == "hermes/dialogueManager/sessionEnded":
                break
        return answer

    @staticmethod
    def _take(answer: Answer, topic: str, data: dict[str, Any], at: float) -> None:
        if topic == "hermes/asr/textCaptured":
            answer.text = data.get("text")
            answer.session_id = data.get("sessionId")
        elif topic.startswith("hermes/intent/"):
            answer.intent = data["intent"]["intentName"]
            answer.slots = {s["slotName"]: s["value"]["value"] for s in data.get("slots", [])}
            answer.confidence = data["intent"].get("confidenceScore")
            answer.speaker = data.get("speaker")
            answer.timings = data.get("timings") or {}
            answer.answered_at = at
        elif topic == "hermes/nlu/intentNotRecognized":
            answer.speaker = data.get("speaker")
            answer.answered_at = at
        elif topic == "hermes/tts/say":
            answer.said.append(data.get("text", ""))
        elif topic.startswith("hermes/error/"):
            answer.errors.append(str(data.get("error")))
        elif topic == "hermes/dialogueManager/sessionEnded":
            answer.termination = (data.get("termination") or {}).get("reason")
            answer.session_id = answer.session_id or data.get("sessionId")
