"""Hermes topic parsing and payload shapes (pure)."""

from __future__ import annotations

import json

import pytest

from voiced.errors import TransportError
from voiced.models import IntentResult, Slot, SpeakerMatch, Termination, Transcript
from voiced.sites import safe_repr
from voiced.transport import hermes, native
from voiced.transport.hermes import PayloadError


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


# -- validation where values enter (faults found by a hostile LAN client) ----------------

HOTWORD = "hermes/hotword/porcupine/detected"
BAD_SITE_IDS = ["#", "+", "/", "a/b", "kitchen#", "\u0001", "\ud800", "x" * 70_000, "a b",
                "küche", "x" * 65,
                # dots alone: a path segment of their own in a handler's URL ({site})
                ".", "..", "..."]


def _refusal(topic: str, data: object) -> PayloadError:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(PayloadError) as info:
        hermes.parse_topic(topic, payload)
    message = info.value.message
    assert message.isascii() and message.isprintable() and len(message) < 400, message
    return info.value


@pytest.mark.parametrize("site", BAD_SITE_IDS)
def test_bad_site_ids_are_refused_with_no_site(site: str) -> None:
    for topic in (HOTWORD, "hermes/asr/startListening", "hermes/asr/stopListening"):
        exc = _refusal(topic, {"siteId": site})
        assert exc.code == "site_id_invalid" and exc.site is None
        assert "A-Z a-z 0-9 _ - . : @ (not dots alone)" in exc.message
    if "/" not in site and "#" not in site and "+" not in site:  # a possible topic segment
        exc = _refusal(f"hermes/audioServer/{site}/audioFrame", b"RIFF")
        assert exc.code == "site_id_invalid" and exc.site is None


def test_bad_site_id_is_quoted_escaped_and_truncated() -> None:
    exc = _refusal(HOTWORD, {"siteId": "\ud800" + "x" * 70_000})
    assert "'\\ud800xxx" in exc.message and "70001 characters" in exc.message


@pytest.mark.parametrize("site", [5, True, [], {}, 1.5])
def test_site_id_of_the_wrong_type(site: object) -> None:
    exc = _refusal(HOTWORD, {"siteId": site})
    assert exc.code == "site_id_invalid" and type(site).__name__ in exc.message


def test_good_ids_pass_and_missing_site_is_default() -> None:
    site = "sat-1.home:2@" + "a" * 51  # 64 characters, every punctuation mark allowed
    msg = hermes.parse_topic(HOTWORD, json.dumps(
        {"siteId": site, "sessionId": "4fa9c0ba-1d2e-4c6a-9a0e-1b2c3d4e5f60",
         "customData": "{\"küche\": \"✓\"}\n", "modelId": "hey jarvis v2"}).encode())
    assert msg is not None and msg.site == site and msg.wakeword_id == "porcupine"
    assert msg.session_id == "4fa9c0ba-1d2e-4c6a-9a0e-1b2c3d4e5f60"
    assert msg.custom_data == "{\"küche\": \"✓\"}\n"
    for payload in ({}, {"siteId": None}, {"siteId": ""}, {"sessionId": None, "customData": None}):
        msg = hermes.parse_topic("hermes/asr/startListening", json.dumps(payload).encode())
        assert msg is not None and msg.site == "default" and msg.session_id is None


@pytest.mark.parametrize("session", [[], 5, "\ud800", "a/b", "a#", "s" * 129, "\u0001"])
def test_bad_session_ids_are_refused(session: object) -> None:
    exc = _refusal("hermes/asr/startListening", {"siteId": "hall", "sessionId": session})
    assert exc.code == "session_id_invalid" and exc.site == "hall"


@pytest.mark.parametrize("custom", [5, ["x"], {"a": 1}, "\ud800", "x" * 8193, "é" * 4097])
def test_bad_custom_data_is_refused(custom: object) -> None:
    exc = _refusal(HOTWORD, {"siteId": "hall", "customData": custom})
    assert exc.code == "custom_data_invalid" and exc.site == "hall"


def test_bad_wakeword_and_model_ids_are_refused() -> None:
    exc = _refusal(f"hermes/hotword/{'w' * 129}/detected", {"siteId": "hall"})
    assert exc.code == "wakeword_id_invalid"
    exc = _refusal("hermes/hotword/a\u0001b/detected", {"siteId": "hall"})
    assert exc.code == "wakeword_id_invalid"
    exc = _refusal("hermes/asr/startListening", {"siteId": "hall", "wakewordId": "\ud800"})
    assert exc.code == "wakeword_id_invalid"
    for model in (7, "m" * 129, "\ud800"):
        exc = _refusal(HOTWORD, {"siteId": "hall", "modelId": model})
        assert exc.code == "model_id_invalid"


def test_a_hotwords_optional_score_is_read_and_checked() -> None:
    for score, read in ((0.87, 0.87), (1, 1.0), (0, 0.0), (None, None)):
        msg = hermes.parse_topic(HOTWORD, json.dumps({"siteId": "hall", "score": score})
                                 .encode())
        assert msg is not None and msg.wake_score == read
    msg = hermes.parse_topic(HOTWORD, b'{"siteId": "hall"}')
    assert msg is not None and msg.wake_score is None
    # only a hotword carries one: startListening's "score" means nothing to voiced
    msg = hermes.parse_topic("hermes/asr/startListening", b'{"score": "high"}')
    assert msg is not None and msg.wake_score is None
    for bad in (True, "0.9", 1.5, -0.1, [0.5], {"value": 0.5}):
        exc = _refusal(HOTWORD, {"siteId": "hall", "score": bad})
        assert exc.code == "wake_score_invalid" and exc.site == "hall"
    exc = _refusal(HOTWORD, b'{"siteId": "hall", "score": NaN}')
    assert exc.code == "wake_score_invalid"
    # JSON integers have no bound (under the 4300-digit limit): one too big for a float
    # used to raise OverflowError out of the parser instead of being refused
    for big in (b"1" + b"0" * 400, b"-" + b"9" * 400, b"2"):
        exc = _refusal(HOTWORD, b'{"siteId": "hall", "score": ' + big + b"}")
        assert exc.code == "wake_score_invalid", big


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"siteId": "a", "n": ' + b"1" * 5000 + b"}", "4300 digits"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1]", "got list"),
        (b'"text"', "got str"),
        (b"null", "got NoneType"),
        (b"[" * 500 + b"]" * 500, "got list"),
    ],
)
def test_malformed_json_is_json_invalid(payload: bytes, says: str) -> None:
    exc = _refusal("hermes/asr/startListening", payload)
    assert exc.code == "json_invalid" and says in exc.message and exc.site is None


def test_native_topics_validate_site_and_format() -> None:
    assert native.parse_topic("voiced/audio/kitchen/pcm") == ("kitchen", "pcm")
    for site in ("\u0001", "x" * 65, "a b", "\u00e9"):
        with pytest.raises(TransportError) as info:
            native.parse_topic(f"voiced/audio/{site}/format")
        assert info.value.code == "site_id_invalid"
        assert info.value.message.isascii()
    topic = "voiced/audio/k/format"
    assert native.parse_format(topic, b'{"rate": 48000, "width": 4, "channels": 2}') == \
        native.PcmFormat(48000, 4, 2)
    for payload, code in [
        (b'{"rate": 191999}', "rate_unsupported"),
        (b'{"rate": 3}', "rate_unsupported"),
        (b'{"rate": 16000.0}', "format_invalid"),
        (b'{"width": true}', "format_invalid"),
        (b'{"channels": "2"}', "format_invalid"),
        (b'{"channels": 17}', "format_invalid"),
        (b'{"width": 0}', "format_invalid"),
        (b"[" * 100_000, "json_invalid"),
        (b'{"rate": ' + b"9" * 5000 + b"}", "json_invalid"),
        (b"[16000]", "json_invalid"),
    ]:
        with pytest.raises(TransportError) as info:
            native.parse_format(topic, payload)
        assert info.value.code == code, payload[:40]


def test_safe_repr_is_ascii_and_bounded() -> None:
    for value in ("\ud800", "\u0001", "x" * 70_000, "é", [1] * 100_000, {"a": "b" * 99}):
        text = safe_repr(value)
        assert text.isascii() and text.isprintable() and len(text) < 80, text
