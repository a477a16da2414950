"""The satellite client: streams audio to voiced like a Raspberry Pi satellite would and
collects what voiced answered for each utterance.

Used by `voiced satellite`, the first-run demo, the latency benchmark and the tests. With
`Topics.NATIVE` it uses only the topics the broker ACL (config/mosquitto/voiced.acl)
grants a satellite, so it works behind it; `Topics.HERMES` reads the payload-site Hermes
topics, as a Rhasspy satellite does, on plain brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

import aiomqtt

from voiced.audio.wav import build_wav
from voiced.config import MqttTlsConfig
from voiced.const import (
    CHANNELS,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    SATELLITE_FRAME_MS,
    VAD_FRAME_BYTES,
    ms_to_bytes,
)
from voiced.satellite_answers import Answer, take_hermes, take_native
from voiced.transport import native
from voiced.transport.mqtt_wire import NO_DELAY

__all__ = ["Answer", "Satellite", "Topics", "last_speech_offset", "room_tone"]

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
"""What a satellite reads with `Topics.HERMES` (besides its own playBytes)."""


class Topics(StrEnum):
    """Where the satellite reads its answers and sends its wake word."""

    AUTO = "auto"
    """NATIVE when the client logs in (username or password) or uses TLS, else HERMES."""
    NATIVE = "native"
    """`voiced/events/<site>`, its playBytes and `voiced/control/<site>/...`: what the ACL
    grants a satellite."""
    HERMES = "hermes"
    """The payload-site Hermes topics and `hermes/hotword/...`: plain brokers only."""


def play_topic(site: str) -> str:
    """Where voiced sends `site` its spoken answers as audio."""
    return f"hermes/audioServer/{site}/playBytes/#"


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


Message = tuple[str, dict[str, Any] | bytes, float]
"""(topic, JSON object or playBytes WAV, monotonic arrival time)."""


class Satellite:
    """One simulated satellite on one MQTT connection.

    `username`/`password` log in (the username defaults to the site id when a password is
    given: the ACL's convention); `tls` is voiced's own `mqtt.tls` settings (the broker's
    certificate is always verified). `topics` picks the answer and control topics
    (`Topics`).
    """

    def __init__(self, host: str, port: int, site: str, *, raw: bool = False,
                 client_id: str | None = None, username: str | None = None,
                 password: str | None = None, tls: MqttTlsConfig | None = None,
                 topics: Topics | str = Topics.AUTO) -> None:
        self.host, self.port, self.site, self.raw = host, port, site, raw
        self._client_id = client_id
        self.username = username if username is not None or password is None else site
        self._password = password
        self._tls = tls
        chosen = Topics(topics)
        if chosen == Topics.AUTO:
            locked = self.username is not None or password is not None or tls is not None
            chosen = Topics.NATIVE if locked else Topics.HERMES
        self.topics = chosen
        """NATIVE or HERMES (AUTO resolved)."""
        self._client: aiomqtt.Client | None = None
        self._answers: asyncio.Queue[Message | None] = asyncio.Queue()
        """Answers, then None once the reader ended (`_lost` says why)."""
        self._reader: asyncio.Task[None] | None = None
        self._lost: Exception | None = None
        self.frames_sent = 0
        self.ignored = 0
        """Messages on this satellite's topics that were not answers it understood."""

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The topics this satellite reads."""
        if self.topics == Topics.NATIVE:
            return (native.events_topic(self.site), play_topic(self.site))
        return (*ANSWER_TOPICS, play_topic(self.site))

    async def __aenter__(self) -> Satellite:
        self._client = aiomqtt.Client(
            self.host, self.port, identifier=self._client_id, username=self.username,
            password=self._password,
            tls_context=self._tls.context() if self._tls is not None else None,
            socket_options=NO_DELAY)
        await self._client.__aenter__()
        try:
            for topic in self.subscriptions:
                await self._client.subscribe(topic)
            if self.raw:
                fmt = {"rate": SAMPLE_RATE, "width": SAMPLE_WIDTH, "channels": CHANNELS}
                await self._client.publish(native.format_topic(self.site), json.dumps(fmt))
        except BaseException:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            raise
        self._reader = asyncio.create_task(self._read(), name=f"satellite-{self.site}")
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
        """Queue the answers until the connection ends; then `_lost` and a None wake
        whoever waits for an answer (`next_answer` raises at once)."""
        try:
            await self._receive()
            self._lost = aiomqtt.MqttError("the broker ended the connection")
        except aiomqtt.MqttError as exc:
            self._lost = exc
        except Exception as exc:  # a bug here must not leave the satellite waiting
            log.exception("satellite %s: reading answers failed", self.site)
            self._lost = exc
        self._answers.put_nowait(None)

    async def _receive(self) -> None:
        assert self._client is not None
        plays = f"hermes/audioServer/{self.site}/playBytes/"
        async for message in self._client.messages:
            topic, payload = message.topic.value, message.payload
            if not isinstance(payload, bytes):
                continue
            if topic.startswith(plays):
                self._answers.put_nowait((topic, payload, time.monotonic()))
                continue
            try:
                data = json.loads(payload)
            except (ValueError, RecursionError):
                data = None
            if not isinstance(data, dict):
                self.ignored += 1
                continue
            if data.get("site" if self.topics == Topics.NATIVE else "siteId") == self.site:
                self._answers.put_nowait((topic, data, time.monotonic()))

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
        """Tell voiced a wake word was heard (wake-gated sites): `voiced/control/<site>/
        listen` (native) or `hermes/hotword/<id>/detected`."""
        assert self._client is not None
        if self.topics == Topics.NATIVE:
            await self._client.publish(native.control_topic(self.site, "listen"),
                                       json.dumps({"wakewordId": wakeword_id}))
        else:
            await self._client.publish(
                f"hermes/hotword/{wakeword_id}/detected",
                json.dumps({"modelId": wakeword_id, "siteId": self.site}))

    async def stop(self, session_id: str | None = None) -> None:
        """Stop listening (ends the open session, or only `session_id`):
        `voiced/control/<site>/stop` (native) or `hermes/asr/stopListening`."""
        assert self._client is not None
        if self.topics == Topics.NATIVE:
            payload = json.dumps({"sessionId": session_id} if session_id else {})
            await self._client.publish(native.control_topic(self.site, "stop"), payload)
        else:
            await self._client.publish("hermes/asr/stopListening", json.dumps(
                {"siteId": self.site, "sessionId": session_id}))

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
        sender = asyncio.create_task(self.stream(pcm, realtime=realtime),
                                     name=f"satellite-{self.site}-send")
        try:
            async with asyncio.timeout(timeout):
                answer = await self.next_answer()
        except TimeoutError:
            await sender  # the rest of the file still goes out
            raise
        except BaseException:  # the connection is lost: its error, not the sender's
            sender.cancel()
            await asyncio.wait({sender})
            if not sender.cancelled():
                sender.exception()
            raise
        last_speech_at = await sender
        if answer.answered_at is not None:
            answer.intent_latency_ms = (answer.answered_at - last_speech_at) * 1000
        return answer

    async def _iter_answers(self) -> AsyncIterator[Message]:
        while True:
            if self._lost is not None and self._answers.empty():
                if isinstance(self._lost, aiomqtt.MqttError):
                    raise aiomqtt.MqttError(f"connection lost: {self._lost}") from self._lost
                raise RuntimeError(f"reading answers failed: {self._lost!r}") from self._lost
            message = await self._answers.get()
            if message is not None:
                yield message

    async def next_answer(self) -> Answer:
        """Wait for the next session on this site to end (microphone mode); MqttError at
        once when the connection to the broker is lost."""
        answer = Answer()
        take = take_native if self.topics == Topics.NATIVE else take_hermes
        async for topic, data, at in self._iter_answers():
            if isinstance(data, bytes):
                answer.played += 1
                continue
            try:
                if take(answer, topic, data, at):
                    break
            except (TypeError, ValueError, AttributeError, OverflowError) as exc:
                # a malformed answer is skipped, never the end of the satellite
                self.ignored += 1
                log.warning("satellite %s: ignoring a malformed message on %s: %s",
                            self.site, topic, exc)
        return answer
