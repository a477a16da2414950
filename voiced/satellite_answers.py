"""What voiced answered a satellite: `Answer`, built from its messages by pure functions,
one for each way of reading them (voiced.satellite.Topics).

Every field of a message may be anything: a field of the wrong type (or a number that is
not a finite float) is left out, and a message that cannot be read at all raises TypeError
or ValueError for the caller to skip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SESSION_ENDED = "hermes/dialogueManager/sessionEnded"


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
    played: int = 0
    """Spoken answers received as audio (`playBytes` WAVs, built-in TTS)."""

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


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    """A finite float, or None (a bool, a string, NaN, Infinity, 10**400)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer too large for a float
        return None
    return number if math.isfinite(number) else None


def take_hermes(answer: Answer, topic: str, data: dict[str, Any], at: float) -> bool:
    """Add one Hermes message to `answer`; True when it ended the session."""
    if topic == "hermes/asr/textCaptured":
        answer.text = _text(data.get("text"))
        answer.session_id = _text(data.get("sessionId"))
    elif topic.startswith("hermes/intent/"):
        intent = _dict(data.get("intent"))
        answer.intent = _text(intent.get("intentName"))
        slots = [s for s in data.get("slots") or [] if isinstance(s, dict)]
        answer.slots = {str(s.get("slotName")): _dict(s.get("value")).get("value")
                        for s in slots}
        answer.confidence = _number(intent.get("confidenceScore"))
        answer.speaker = data.get("speaker") if isinstance(data.get("speaker"), dict) else None
        answer.timings = _timings(data.get("timings"))
        answer.answered_at = at
    elif topic == "hermes/nlu/intentNotRecognized":
        answer.speaker = data.get("speaker") if isinstance(data.get("speaker"), dict) else None
        answer.answered_at = at
    elif topic == "hermes/tts/say":
        _say(answer, data.get("text"))
    elif topic.startswith("hermes/error/"):
        answer.errors.append(str(data.get("error")))
    elif topic == SESSION_ENDED:
        termination = data.get("termination")
        answer.termination = _text(termination.get("reason")) \
            if isinstance(termination, dict) else None
        answer.session_id = answer.session_id or _text(data.get("sessionId"))
        return True
    return False


def take_native(answer: Answer, topic: str, data: dict[str, Any], at: float) -> bool:
    """Add one `voiced/events/<site>` event to `answer`; True when it ended the session."""
    kind = data.get("type")
    if kind == "transcript":
        # as Hermes' textCaptured: audio that was not speech was heard as nothing
        answer.text = _text(data.get("text")) if data.get("isSpeech", True) else ""
        answer.session_id = _text(data.get("sessionId"))
    elif kind == "speaker" and isinstance(data.get("name"), str):
        answer.speaker = {k: data.get(k) for k in ("name", "confidence", "verified")}
    elif kind == "intent":
        answer.intent = _text(data.get("intent"))
        slots = data.get("slots")
        answer.slots = dict(slots) if isinstance(slots, dict) else {}
        answer.confidence = _number(data.get("confidence"))
        if isinstance(data.get("speaker"), dict):
            answer.speaker = data["speaker"]
        answer.timings = _timings(data.get("timings"))
        answer.answered_at = at
    elif kind == "not_recognized" or (kind == "handled" and data.get("outcome") == "refused"
                                      and answer.intent is None):
        # refused before it ran (speaker, protection rule): Hermes says intentNotRecognized
        answer.answered_at = answer.answered_at or at
    elif kind == "say":
        _say(answer, data.get("text"))
    elif kind == "error":
        answer.errors.append(f"{data.get('code')}: {data.get('message')}")
    elif kind == "session_ended":
        answer.termination = _text(data.get("reason"))
        answer.session_id = answer.session_id or _text(data.get("sessionId"))
        return True
    return False


def _say(answer: Answer, text: object) -> None:
    if isinstance(text, str):
        answer.said.append(text)


def _timings(value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    numbers = {str(k): _number(v) for k, v in value.items()}
    return {k: v for k, v in numbers.items() if v is not None}
