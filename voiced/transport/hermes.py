"""Hermes (Rhasspy 2.5 / Snips) topics and payloads.

Payload keys are camelCase and optional fields are sent as `null`, exactly as Rhasspy's
services do, so existing satellites and tools understand voiced. voiced adds a few extra
fields (`speaker`, `timings`) that Hermes clients ignore.

Every inbound value that voiced later sends out again (site, session, customData,
wakeword) is validated in `parse_topic`, where it enters; see docs/ingest.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voiced.errors import TransportError
from voiced.models import IntentResult, SpeakerMatch, Termination, Transcript
from voiced.sites import (
    ID_CHARS_TEXT,
    SESSION_ID_MAX,
    check_site_id,
    is_valid_id,
    safe_repr,
    safe_text,
)

DEFAULT_SITE = "default"


class Inbound(StrEnum):
    """Kinds of Hermes messages voiced consumes."""

    AUDIO_FRAME = "audioFrame"
    HOTWORD = "hotwordDetected"
    START_LISTENING = "startListening"
    STOP_LISTENING = "stopListening"


AUDIO_SUBSCRIPTIONS: tuple[str, ...] = ("hermes/audioServer/+/audioFrame",)
CONTROL_SUBSCRIPTIONS: tuple[str, ...] = (
    "hermes/hotword/+/detected",
    "hermes/asr/startListening",
    "hermes/asr/stopListening",
)
"""Session control whose site is only in the payload: a broker ACL cannot say which
satellite may publish them, so whoever may publish one can open or stop a session on any
site. `mqtt.hermes_control: false` leaves them unsubscribed (docs/security.md)."""
SUBSCRIPTIONS: tuple[str, ...] = AUDIO_SUBSCRIPTIONS + CONTROL_SUBSCRIPTIONS


def subscriptions(control: bool) -> tuple[str, ...]:
    """The Hermes topics voiced reads; without `control`, audio only."""
    return SUBSCRIPTIONS if control else AUDIO_SUBSCRIPTIONS


CUSTOM_DATA_MAX_BYTES = 8192
"""Longest `customData` (UTF-8 bytes); it is echoed in every message of the session."""
NAME_MAX = 128
"""Longest `wakewordId` / `modelId` (characters)."""


class PayloadError(TransportError):
    """An inbound Hermes message that voiced refuses; `site` is its site id when that
    was valid (so the error can name it), else None."""

    def __init__(self, code: str, message: str, site: str | None = None) -> None:
        super().__init__(code, message)
        self.site = site


@dataclass(frozen=True, slots=True)
class HermesMessage:
    """A parsed, validated inbound Hermes message."""

    kind: Inbound
    site: str
    """A valid site id (`voiced.sites.check_site_id`)."""
    payload: bytes
    """The raw payload (a WAV file for audioFrame)."""
    data: dict[str, Any]
    """The decoded JSON for control messages (empty for audio)."""
    wakeword_id: str | None = None
    """From the hotword topic, else the payload's `wakewordId`; printable, bounded."""
    session_id: str | None = None
    """The payload's `sessionId`: a safe id, or None (voiced makes one)."""
    custom_data: str | None = None
    """The payload's `customData`: valid UTF-8 text of bounded size, or None."""
    wake_score: float | None = None
    """A hotword's optional `score` (0..1: how sure the satellite's wake word detector was),
    used by room-group arbitration (voiced.arbitration) when every candidate has one."""


def parse_topic(topic: str, payload: bytes) -> HermesMessage | None:
    """Classify and validate a Hermes message; None when it is not one voiced consumes.

    Raises PayloadError: `json_invalid` (not JSON, nested too deeply, a number too long,
    not an object), `site_id_invalid`, `session_id_invalid`, `custom_data_invalid`,
    `wakeword_id_invalid`, `model_id_invalid`.
    """
    parts = topic.split("/")
    if len(parts) == 4 and parts[:2] == ["hermes", "audioServer"] and parts[3] == "audioFrame":
        return HermesMessage(Inbound.AUDIO_FRAME, _checked_site(parts[2], topic), payload, {})
    if len(parts) == 4 and parts[:2] == ["hermes", "hotword"] and parts[3] == "detected":
        return _control(Inbound.HOTWORD, topic, payload, wakeword_id=parts[2])
    if topic == "hermes/asr/startListening":
        return _control(Inbound.START_LISTENING, topic, payload)
    if topic == "hermes/asr/stopListening":
        return _control(Inbound.STOP_LISTENING, topic, payload)
    return None


def _checked_site(site: object, topic: str) -> str:
    try:
        return check_site_id(site, topic)
    except TransportError as exc:
        raise PayloadError(exc.code, exc.message) from None


def parse_site_control(kind: Inbound, site: str, topic: str, payload: bytes) -> HermesMessage:
    """A control message whose topic names its (valid) site, e.g. `voiced/control/<site>/
    listen`: the payload is a Hermes control payload or empty; a `siteId` in it must be
    that site (PayloadError `site_mismatch`), other fields are checked as in `parse_topic`.
    """
    return _control(kind, topic, payload or b"{}", topic_site=site)


def _control(kind: Inbound, topic: str, payload: bytes,
             wakeword_id: str | None = None, topic_site: str | None = None) -> HermesMessage:
    data = _json(topic, payload)
    raw_site = data.get("siteId")
    if topic_site is not None:
        if raw_site not in (None, "", topic_site):
            raise PayloadError("site_mismatch",
                               f"{safe_text(topic)}: siteId {safe_repr(raw_site)} is not the "
                               f"site the topic names ({topic_site})", topic_site)
        site = topic_site
    else:
        # Hermes: a missing (or null, or empty) siteId means "default"
        site = _checked_site(raw_site, topic) if raw_site not in (None, "") else DEFAULT_SITE
    session_id = data.get("sessionId")
    if session_id == "":
        session_id = None
    if session_id is not None and not is_valid_id(session_id, SESSION_ID_MAX):
        raise PayloadError("session_id_invalid",
                           f"{safe_text(topic)}: sessionId {safe_repr(session_id)} is not a "
                           f"valid session id; expected 1 to {SESSION_ID_MAX} of the "
                           f"characters {ID_CHARS_TEXT}", site)
    if wakeword_id is not None:
        wakeword_id = _name(topic, "wakewordId (in the topic)", wakeword_id, site)
    else:
        wakeword_id = _name(topic, "wakewordId", data.get("wakewordId"), site)
    _name(topic, "modelId", data.get("modelId"), site)
    score = _wake_score(topic, data.get("score"), site) if kind == Inbound.HOTWORD else None
    return HermesMessage(kind, site, payload, data, wakeword_id=wakeword_id,
                         session_id=session_id,
                         custom_data=_custom_data(topic, data.get("customData"), site),
                         wake_score=score)


def _wake_score(topic: str, value: object, site: str) -> float | None:
    """A hotword's `score`: null/absent, or a number from 0 to 1 (not a boolean)."""
    if value is None:
        return None
    # an int is compared as it is: a JSON integer of 400 digits is valid JSON, and
    # math.isfinite() would raise OverflowError converting it
    if (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1) or \
            (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        return float(value)
    raise PayloadError("wake_score_invalid", f"{safe_text(topic)}: score {safe_repr(value)} "
                       f"is not valid; expected null or a number from 0 to 1", site)


def _json(topic: str, payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except RecursionError:
        raise PayloadError("json_invalid",
                           f"{safe_text(topic)}: payload is not valid JSON (nested too deeply)"
                           ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise PayloadError("json_invalid", f"{safe_text(topic)}: payload is not valid JSON "
                           f"({safe_text(str(exc), 200)})") from None
    if not isinstance(data, dict):
        raise PayloadError("json_invalid", f"{safe_text(topic)}: expected a JSON object, "
                           f"got {type(data).__name__}")
    return data


def _name(topic: str, field: str, value: object, site: str) -> str | None:
    """A wakewordId / modelId: null, or 1 to NAME_MAX printable characters."""
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= NAME_MAX and value.isprintable():
        return value
    code = "model_id_invalid" if field == "modelId" else "wakeword_id_invalid"
    raise PayloadError(code, f"{safe_text(topic)}: {field} {safe_repr(value)} is not valid; "
                       f"expected null or 1 to {NAME_MAX} printable characters", site)


def _custom_data(topic: str, value: object, site: str) -> str | None:
    """customData: null, or text that is valid UTF-8 of at most CUSTOM_DATA_MAX_BYTES."""
    if value is None:
        return None
    if not isinstance(value, str):
        problem = f"is a {type(value).__name__}; expected a string or null"
    elif len(value) > CUSTOM_DATA_MAX_BYTES:
        problem = f"has {len(value)} characters; at most {CUSTOM_DATA_MAX_BYTES} bytes allowed"
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            problem = "is not valid Unicode text (it holds a lone surrogate)"
        else:
            if size <= CUSTOM_DATA_MAX_BYTES:
                return value
            problem = f"is {size} bytes of UTF-8; at most {CUSTOM_DATA_MAX_BYTES} allowed"
    raise PayloadError("custom_data_invalid",
                       f"{safe_text(topic)}: customData {problem}", site)


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
