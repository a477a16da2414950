"""Event subscribers that speak MQTT: the Hermes bridge, native events, audio out.

Stages emit `PipelineEvent`s into the sink (voiced.events); these translate them to wires.
Each takes a `publish(topic, payload)` coroutine (the MQTT link's), so none of them knows
about connections or reconnects.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from voiced.errors import VoicedError
from voiced.events import Subscriber
from voiced.models import EventType, PipelineEvent, Termination
from voiced.transport import hermes, native
from voiced.transport.mqtt_wire import Payload

log = logging.getLogger(__name__)

Publish = Callable[[str, Payload], Awaitable[Any]]


class HermesBridge(Subscriber):
    """Rhasspy 2.5 / Snips Hermes messages for the events that have one."""

    name = "hermes"

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    async def handle(self, event: PipelineEvent) -> None:
        """Publish the Hermes message(s) for one event."""
        site, sid = event.site, event.session_id
        kind = event.type
        if kind == EventType.SESSION_STARTED:
            await self._publish("hermes/dialogueManager/sessionStarted",
                                hermes.session_started(sid, site, event.custom_data))
        elif kind == EventType.SESSION_ENDED:
            await self._publish("hermes/dialogueManager/sessionEnded", hermes.session_ended(
                sid, site, Termination(event.data["reason"]), event.custom_data,
                event.data.get("error")))
        elif kind == EventType.TRANSCRIPT and event.transcript is not None:
            transcript = event.transcript
            # audio judged not to be speech (a TV, a cough) was heard as nothing
            if not transcript.is_speech:
                transcript = replace(transcript, text="", tokens=())
            seconds = event.utterance.duration_s if event.utterance is not None else 0.0
            await self._publish("hermes/asr/textCaptured", hermes.text_captured(
                transcript, seconds, site, sid, event.wakeword_id))
        elif kind == EventType.INTENT and event.result is not None:
            assert event.transcript is not None
            payload = hermes.intent_parsed(event.result, event.transcript, site, sid,
                                           event.custom_data, event.wakeword_id, event.speaker,
                                           dict(event.timings_ms))
            await self._publish("hermes/nlu/intentParsed", payload)
            await self._publish(f"hermes/intent/{event.result.name}", payload)
        elif kind == EventType.NOT_RECOGNIZED or (
                kind == EventType.HANDLED and event.result is not None
                and not event.result.recognized):
            # not understood, or understood but refused to this speaker: Hermes has one
            # message for both
            heard = event.transcript
            text = heard.text if heard is not None and heard.is_speech else ""
            await self._publish("hermes/nlu/intentNotRecognized", hermes.intent_not_recognized(
                text, site, sid, event.custom_data, event.speaker))
        elif kind == EventType.ERROR:
            component = str(event.data.get("component") or "voiced")
            message = f"{event.data.get('code')}: {event.data.get('message')}"
            await self._publish(f"hermes/error/{component}", hermes.error(
                component, message, site or None, sid or None))


class NativeEvents(Subscriber):
    """Every event of a site as JSON on `voiced/events/<site>`."""

    name = "native"

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    async def handle(self, event: PipelineEvent) -> None:
        """Publish the event's JSON (events without a site have no topic)."""
        if event.site:
            await self._publish(native.events_topic(event.site), event.to_json())


class Synthesizer(Protocol):
    """The built-in TTS module's interface (voiced.tts)."""

    async def synthesize(self, text: str, voice: str | None) -> bytes: ...


class AudioOut(Subscriber):
    """Speaks answers: built-in TTS as `playBytes`, else `hermes/tts/say`, never both.

    Publishing both made an external Rhasspy TTS speak every answer a second time.
    """

    name = "audio-out"

    def __init__(self, publish: Publish, tts: Synthesizer | None, voice: str | None) -> None:
        self._publish = publish
        self._tts = tts
        self._voice = voice
        self.spoken = 0
        self.fallbacks = 0
        """Answers sent to hermes/tts/say because the built-in TTS failed."""

    async def handle(self, event: PipelineEvent) -> None:
        """Speak a SAY event on its site."""
        if event.type != EventType.SAY:
            return
        text = str(event.data.get("text") or "")
        if not text:
            return
        self.spoken += 1
        lang = event.data.get("lang")
        if self._tts is not None:
            try:
                wav = await self._tts.synthesize(text, self._voice)
            except VoicedError as exc:
                self.fallbacks += 1
                log.warning("built-in TTS failed (%s); sending hermes/tts/say instead", exc)
            else:
                await self._publish(f"hermes/audioServer/{event.site}/playBytes/{uuid.uuid4()}",
                                    wav)
                return
        await self._publish("hermes/tts/say", hermes.tts_say(
            text, event.site, event.session_id or None, str(lang) if lang else None))


def builtin_tts(config: Any) -> Synthesizer | None:
    """The built-in TTS module when `tts.mode` allows it and espeak-ng/piper is there."""
    if config.tts.mode == "hermes":
        return None
    from voiced import tts

    if tts.find_tts(config.tts.voice) is None:
        if config.tts.mode == "builtin":
            log.warning("tts.mode is builtin but no TTS program (espeak-ng, piper) is "
                        "installed; answers go to hermes/tts/say")
        return None
    return tts  # type: ignore[return-value]
