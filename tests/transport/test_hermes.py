"""Hermes topic parsing and payload shapes (pure)."""

from __future__ import annotations

import json

import pytest

from voiced.errors import TransportError
from voiced.models import IntentResult, Slot, SpeakerMatch, Termination, Transcript
from voiced.transport import hermes


def test_parse_topics() -> None:
    msg = hermes.parse_topic("hermes/audioServer/kitchen/audioFrame", b"RIFF")
    assert msg is not None and msg.kind == hermes.Inbound.AUDIO_FRAME and msg.site == "kitchen"
    msg = hermes.parse_topic("hermes/hotword/porcupine/detected", b'{"siteId": "hall"}')
    assert msg is not None and msg.kind == hermes.Inbound.HOTWORD
    assert msg.site == "hall" and msg.wakeword_id == "porcupine"
    msg = hermes.parse_topic("hermes/asr/stopListening", b"{}")
    assert msg is not None and msg.site == "default"
    assert hermes.parse_topic("hermes/tts/say", b"{}") is None


def test_garbage_json_names_topic() -> None:
    with pytest.raises(TransportError, match="hermes/asr/startListening"):
        hermes.parse_topic("hermes/asr/startListening", b"{not json")
    with pytest.raises(TransportError, match="JSON object"):
        hermes.parse_topic("hermes/asr/startListening", b"[1]")


def test_intent_payload_schema() -> None:
    result = IntentResult("set kitchen to fifty percent", "HassLightSet",
                          (Slot("brightness", 50, "fifty", "brightness", 14, 19),), 1.0)
    payload = hermes.intent_parsed(result, Transcript(result.text, 0.9), "k", "s1", None, None,
                                   SpeakerMatch("alice", 0.81), {"asr": 12.3456})
    assert payload["intent"] == {"intentName": "HassLightSet", "confidenceScore": 1.0}
    slot = payload["slots"][0]
    assert slot["slotName"] == "brightness" and slot["value"] == {"kind": "Number", "value": 50}
    assert slot["range"] == {"start": 14, "end": 19, "rawStart": 14, "rawEnd": 19}
    assert payload["customData"] is None and payload["wakewordId"] is None
    assert payload["speaker"] == {"name": "alice", "confidence": 0.81}
    assert payload["timings"] == {"asr": 12.35}
    json.dumps(payload)


def test_session_ended_reason() -> None:
    p = hermes.session_ended("s", "k", Termination.INTENT_NOT_RECOGNIZED, None, None)
    assert p["termination"]["reason"] == "intentNotRecognized"
