"""Hermes (Rhasspy 2.5 / Snips) topics and payloads.

Payload keys are camelCase and optional fields are sent as `null`, exactly as Rhasspy's
services do, so existing satellites and tools understand voiced. voiced adds a few extra
fields (`speaker`, `timings`) that Hermes clients ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voiced.errors import TransportError
from voiced.models import IntentResult, SpeakerMatch, Termination, Transcript

DEFAULT_SITE = "default"


class Inbound(StrEnum):
    """Kinds of Hermes messages voiced consumes."""

    AUDIO_FRAME = "audioFrame"
    HOTWORD = "hotwordDetected"
    START_LISTENING = "startListening"
    STOP_LISTENING = "stopListening"


SUBSCRIPTIONS: tuple[str, ...] = (
    "hermes/audioServer/+/audioFrame",
    "hermes/hotword/+/detected",
    "hermes/asr/startListening",
    "hermes/asr/stopListening",
)


@dataclass(frozen=True, slots=True)
class HermesMessage:
    """A parsed inbound Hermes message."""

    kind: Inbound
    site: str
    payload: bytes
    """The raw payload (a WAV file for audioFrame)."""
    data: dict[str, Any]
    """The decoded JSON for control messages (empty for audio)."""
    wakeword_id: str | None = None


def parse_topic(topic: str, payload: bytes) -> HermesMessage | None:
    """Classify a Hermes topic; None when it is not one voiced consumes.

    Raises TransportError for malformed JSON on a control topic.
    """
    parts = topic.split("/")
    if len(parts) == 4 and parts[:2] == ["hermes", "audioServer"] and parts[3] == "audioFrame":
        return HermesMessage(Inbound.AUDIO_FRAME, parts[2], payload, {})
    if len(parts) == 4 and parts[:2] == ["hermes", "hotword"] and parts[3] == "detected":
        data = _json(topic, payload)
        return HermesMessage(
            Inbound.HOTWORD, _site(topic, data), payload, data, wakeword_id=parts[2]
        )
    if topic == "hermes/asr/startListening":
        data = _json(topic, payload)
        return HermesMessage(Inbound.START_LISTENING, _site(topic, data), payload, data)
    if topic == "hermes/asr/stopListening":
        data = _json(topic, payload)
        return HermesMessage(Inbound.STOP_LISTENING, _site(topic, data), payload, data)
    return None


def _json(topic: str, payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransportError("bad_json", f"{topic}: payload is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise TransportError(
            "bad_json", f"{topic}: expected a JSON object, got {type(data).__name__}"
        )
    return data


def _site(topic: str, data: dict[str, Any]) -> str:
    site = data.get("siteId") or DEFAULT_SITE
    if not isinstance(site, str):
        raise TransportError("bad_json", f"{topic}: siteId must be a string, got {site!r}")
    return site


# ---- outbound payloads -------------------------------------------------------------------


def session_started(session_id: str, site: str, custom_data: str | None) -> dict[str, Any]:
    """`hermes/dialogueManager/sessionStarted`."""
    return {"sessionId": session_id, "siteId": site, "customData": custom_data, "lang": None}


def session_ended(
    session_id: str, site: str, reason: Termination, custom_data: str | None, error: str | None
) -> dict[str, Any]:
    """`hermes/dialogueManager/sessionEnded`."""
    return {
        "sessionId": session_id,
        "siteId": site,
        "customData": custom_data,
        "termination": {"reason": str(reason), "error": error},
    }


def text_captured(
    transcript: Transcript, seconds: float, site: str, session_id: str, wakeword_id: str | None
) -> dict[str, Any]:
    """`hermes/asr/textCaptured`."""
    return {
        "text": transcript.text,
        "likelihood": round(transcript.confidence, 4),
        "seconds": round(seconds, 3),
        "siteId": site,
        "sessionId": session_id,
        "wakewordId": wakeword_id,
        "asrTokens": None,
        "lang": transcript.language,
    }


def _slot(slot_name: str, entity: str, value: Any, raw: str, start: int, end: int) -> dict:
    kind = "Number" if isinstance(value, int | float) and not isinstance(value, bool) else "Unknown"
    return {
        "entity": entity,
        "slotName": slot_name,
        "rawValue": raw,
        "value": {"kind": kind, "value": value},
        "confidence": 1.0,
        "range": {"start": start, "end": end, "rawStart": start, "rawEnd": end},
    }


def speaker_json(speaker: SpeakerMatch | None) -> dict[str, Any] | None:
    """voiced's extra `speaker` field."""
    if speaker is None:
        return None
    return {"name": speaker.name, "confidence": round(speaker.confidence, 4)}


def intent_parsed(
    result: IntentResult,
    transcript: Transcript,
    site: str,
    session_id: str,
    custom_data: str | None,
    wakeword_id: str | None,
    speaker: SpeakerMatch | None,
    timings_ms: dict[str, float],
) -> dict[str, Any]:
    """`hermes/nlu/intentParsed` and `hermes/intent/<name>` (same payload)."""
    return {
        "input": result.text,
        "intent": {"intentName": result.name, "confidenceScore": round(result.confidence, 4)},
        "siteId": site,
        "id": session_id,
        "slots": [
            _slot(s.name, s.entity, s.value, s.raw_value, s.start, s.end) for s in result.slots
        ],
        "sessionId": session_id,
        "customData": custom_data,
        "asrConfidence": round(transcript.confidence, 4),
        "rawInput": transcript.text,
        "wakewordId": wakeword_id,
        "lang": transcript.language,
        "speaker": speaker_json(speaker),
        "matchedBy": result.matched_by,
        "timings": {k: round(v, 2) for k, v in timings_ms.items()},
    }


def intent_not_recognized(
    text: str, site: str, session_id: str, custom_data: str | None,
    speaker: SpeakerMatch | None = None,
) -> dict[str, Any]:
    """`hermes/nlu/intentNotRecognized`."""
    return {
        "input": text,
        "siteId": site,
        "id": session_id,
        "customData": custom_data,
        "sessionId": session_id,
        "speaker": speaker_json(speaker),
    }


def tts_say(text: str, site: str, session_id: str | None, lang: str | None) -> dict[str, Any]:
    """`hermes/tts/say`."""
    return {
        "text": text,
        "siteId": site,
        "lang": lang,
        "id": session_id,
        "sessionId": session_id,
        "volume": None,
    }


def error(component: str, message: str, site: str | None, session_id: str | None,
          context: str | None = None) -> dict[str, Any]:
    """`hermes/error/<component>`."""
    return {"error": message, "siteId": site, "context": context, "sessionId": session_id}
