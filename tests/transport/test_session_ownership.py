"""Session control without a broker ACL (a plain, anonymous mosquitto): the site-scoped
voiced/control topics, `mqtt.hermes_control`, and a stop that must name the open session.
With the ACL, tests/transport/test_acl.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from support import FIXTURES, Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.enrollment import ENROLL_MARK
from voiced.protect import CONFIRM_MARK
from voiced.satellite import Satellite
from voiced.transport import hermes, native


async def next_events(client: aiomqtt.Client, count: int) -> list[dict[str, Any]]:
    """The next `count` pipeline events `client` gets."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append(json.loads(message.payload))
            if len(got) == count:
                return got
    raise AssertionError("no events")


async def test_without_an_acl_a_stop_must_name_the_open_session(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = make_config(tmp_path, mosquitto.port, sites={"default_mode": "wake"},
                         vad={"wake_timeout_s": 60})
    async with running_daemon(config), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe("voiced/events/kitchen", qos=1)
        await client.publish("hermes/asr/startListening",
                             json.dumps({"siteId": "kitchen", "sessionId": "s-1"}), qos=1)
        # a stop for another session (a stale one, another site's) leaves this one open
        await client.publish("hermes/asr/stopListening",
                             json.dumps({"siteId": "kitchen", "sessionId": "s-0"}), qos=1)
        await client.publish("hermes/asr/stopListening",
                             json.dumps({"siteId": "kitchen", "sessionId": "s-1"}), qos=1)
        events = await next_events(client, 3)
        assert [(e["type"], e["sessionId"], e.get("code") or e.get("reason")) for e in events] \
            == [("session_started", "s-1", None),
                ("error", "s-0", "session_mismatch"),
                ("session_ended", "s-1", "abortedByUser")]
        assert "nothing was stopped" in events[1]["message"]
        # a stop that names no session stops whichever is open (Hermes clients do that)
        await client.publish("voiced/control/kitchen/listen",
                             json.dumps({"sessionId": "s-2"}), qos=1)
        await client.publish("voiced/control/kitchen/stop", b"", qos=1)
        assert [(e["type"], e["sessionId"]) for e in await next_events(client, 2)] == [
            ("session_started", "s-2"), ("session_ended", "s-2")]


@pytest.mark.parametrize(("hermes_control", "opened_by"), [(True, "hermes"), (False, "native")])
async def test_hermes_control_off_leaves_the_payload_site_topics_unread(
        mosquitto: Mosquitto, tmp_path: Path, hermes_control: bool, opened_by: str) -> None:
    config = make_config(tmp_path, mosquitto.port, sites={"default_mode": "wake"},
                         vad={"wake_timeout_s": 60},
                         mqtt={"hermes_control": hermes_control})
    async with running_daemon(config), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe("voiced/events/kitchen", qos=1)
        # the first start wins (a second is ignored while a session is open)
        await client.publish("hermes/hotword/voiced/detected",
                             json.dumps({"siteId": "kitchen", "sessionId": "hermes"}), qos=1)
        await client.publish("voiced/control/kitchen/listen",
                             json.dumps({"sessionId": "native"}), qos=1)
        [started] = await next_events(client, 1)
        assert (started["type"], started["sessionId"]) == ("session_started", opened_by)


def test_a_control_topic_names_its_site() -> None:
    msg = native.parse_control("voiced/control/kitchen/listen",
                               json.dumps({"sessionId": "s", "wakewordId": "hey",
                                           "customData": "x"}).encode())
    assert msg is not None
    assert (msg.kind, msg.site, msg.session_id, msg.wakeword_id, msg.custom_data) == (
        hermes.Inbound.START_LISTENING, "kitchen", "s", "hey", "x")
    stop = native.parse_control("voiced/control/kitchen/stop", b"")
    assert stop is not None and (stop.kind, stop.site, stop.session_id) == (
        hermes.Inbound.STOP_LISTENING, "kitchen", None)
    for topic in ("voiced/control/kitchen/other", "voiced/control/kitchen", "voiced/audio/k/pcm",
                  "hermes/asr/stopListening", "voiced/control/kitchen/stop/more"):
        assert native.parse_control(topic, b"{}") is None


@pytest.mark.parametrize(("topic", "payload", "code"), [
    ("voiced/control/kitchen/stop", {"siteId": "den"}, "site_mismatch"),
    ("voiced/control/kitchen/listen", {"siteId": 5}, "site_mismatch"),
    ("voiced/control/kit chen/listen", {}, "site_id_invalid"),
    ("voiced/control/" + "k" * 65 + "/listen", {}, "site_id_invalid"),
    ("voiced/control/kitchen/listen", {"sessionId": "a/b"}, "session_id_invalid"),
    ("voiced/control/kitchen/listen", [1], "json_invalid"),
])
def test_a_bad_control_message_is_refused_by_name(topic: str, payload: object,
                                                  code: str) -> None:
    with pytest.raises(hermes.PayloadError) as refused:
        native.parse_control(topic, json.dumps(payload).encode())
    assert refused.value.code == code
    if code == "site_mismatch":
        assert refused.value.site == "kitchen" and "not the site the topic names" in \
            refused.value.message


async def test_a_session_id_names_one_session_on_one_site(mosquitto: Mosquitto,
                                                          tmp_path: Path) -> None:
    """A client-chosen session id already open on another site is refused: two live
    sessions with one id made every event and answer about it ambiguous."""
    config = make_config(tmp_path, mosquitto.port, sites={"default_mode": "wake"},
                         vad={"wake_timeout_s": 60})
    async with running_daemon(config), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe("voiced/events/+", qos=1)
        await client.publish("hermes/asr/startListening",
                             json.dumps({"siteId": "kitchen", "sessionId": "s-1"}), qos=1)
        await client.publish("voiced/control/den/listen", json.dumps({"sessionId": "s-1"}),
                             qos=1)
        await client.publish("hermes/asr/stopListening",
                             json.dumps({"siteId": "kitchen", "sessionId": "s-1"}), qos=1)
        events = await next_events(client, 3)
        assert [(e["type"], e["site"], e.get("code") or e.get("reason")) for e in events] == [
            ("session_started", "kitchen", None),
            ("error", "den", "session_id_in_use"),
            ("session_ended", "kitchen", "abortedByUser")]
        # once it ended there, the id is free again
        await client.publish("voiced/control/den/listen", json.dumps({"sessionId": "s-1"}),
                             qos=1)
        [started] = await next_events(client, 1)
        assert (started["type"], started["site"], started["sessionId"]) == (
            "session_started", "den", "s-1")


async def test_customdata_is_the_clients_and_never_a_turn_of_voiceds(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """customData equal to voiced's own marks (`voiced-confirm`, `voiced-enroll`) is only
    data: the command is heard, shown and run as any other. It used to make the command a
    PIN answer: hidden as `[confirmation]`, its audio not kept, and refused."""
    manifest = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
    entry = next(e for e in manifest["commands"] if e["intent"] == "HassTurnOn")
    pcm = read_wav_file(FIXTURES / entry["file"])
    config = make_config(tmp_path, mosquitto.port, sites={"default_mode": "wake"},
                         vad={"wake_timeout_s": 60})
    async with running_daemon(config), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client, \
            Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
        await client.subscribe("hermes/asr/textCaptured", qos=1)
        await client.subscribe(f"hermes/intent/{entry['intent']}", qos=1)
        for i, mark in enumerate((CONFIRM_MARK, ENROLL_MARK)):
            await client.publish("hermes/asr/startListening", json.dumps(
                {"siteId": "kitchen", "sessionId": f"c-{i}", "customData": mark}), qos=1)
            answer = await sat.command(pcm, timeout=60)
            assert answer.intent == entry["intent"], (mark, answer)
            got = await next_events(client, 2)
            captured = next(e for e in got if "text" in e and "intent" not in e)
            assert captured["text"] == entry["text"], (mark, captured)


@pytest.mark.parametrize("control", ["start", "stop"])
async def test_a_start_or_stop_mid_utterance_on_an_always_site_ends_it_visibly(
        mosquitto: Mosquitto, tmp_path: Path, control: str) -> None:
    """On an always-listening site, a start (a dialogue manager's startListening) or a
    stop in the middle of an utterance ends it there, and it is processed like any
    stopped utterance: one `speech_ended` (`stop_listening`), one outcome. A start used to
    drop it without a trace; a stop did nothing."""
    manifest = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
    entry = next(e for e in manifest["commands"] if e["intent"] == "HassTurnOn")
    pcm = read_wav_file(FIXTURES / entry["file"])
    config = make_config(tmp_path, mosquitto.port, vad={"wake_timeout_s": 60})
    async with running_daemon(config), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client, \
            Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
        await client.subscribe("voiced/events/hall", qos=1)
        await sat.stream(pcm[:len(pcm) // 2], realtime=False, trailing_silence_ms=0)
        [started] = await next_events(client, 1)
        assert started["type"] == "speech_started"
        first = started["sessionId"]
        if control == "start":
            await client.publish("hermes/asr/startListening",
                                 json.dumps({"siteId": "hall", "sessionId": "dm-1"}), qos=1)
        else:
            await client.publish("hermes/asr/stopListening",
                                 json.dumps({"siteId": "hall", "sessionId": first}), qos=1)
        seen: list[tuple[str, str, str | None]] = []
        async with asyncio.timeout(30):
            async for message in client.messages:
                event = json.loads(message.payload)  # type: ignore[arg-type]
                seen.append((event["type"], event["sessionId"], event.get("reason")))
                if event["type"] == "session_ended" and event["sessionId"] == first:
                    break
        ours = [s for s in seen if s[1] == first]
        assert ("speech_ended", first, "stop_listening") in ours, seen
        assert [s[0] for s in ours].count("outcome") == 1, seen
        if control == "start":  # then the new session opens
            while ("session_started", "dm-1", None) not in seen:
                [event] = await next_events(client, 1)
                seen.append((event["type"], event["sessionId"], event.get("reason")))


async def test_a_second_start_is_answered(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A start while another session is open is ignored, and now says so (`session_busy`)
    to whoever sent it; the same start again (a retry) is ignored quietly."""
    config = make_config(tmp_path, mosquitto.port, sites={"default_mode": "wake"},
                         vad={"wake_timeout_s": 60})
    async with running_daemon(config), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe("voiced/events/kitchen", qos=1)
        for session in ("s-1", "s-1", "s-2"):
            await client.publish("hermes/asr/startListening",
                                 json.dumps({"siteId": "kitchen", "sessionId": session}), qos=1)
        await client.publish("hermes/asr/stopListening",
                             json.dumps({"siteId": "kitchen", "sessionId": "s-1"}), qos=1)
        events = await next_events(client, 3)
        assert [(e["type"], e["sessionId"], e.get("code") or e.get("reason")) for e in events] \
            == [("session_started", "s-1", None), ("error", "s-2", "session_busy"),
                ("session_ended", "s-1", "abortedByUser")]
